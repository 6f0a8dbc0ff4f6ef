//! Group membership: which active projects a group (and, when asked, its subgroups) holds.
//!
//! A group is listed (`GET /groups/:id/projects`, see [`GroupProjectsQuery::active_tree`]) at
//! most once per refresh interval per (instance, group, `includeSubgroups`), whichever policies
//! name it: two policies on one group share one listing. A listing that fails keeps the last
//! good membership (and is tried again at the policy's next run). Memberships no policy uses
//! any more are dropped.

use crate::gitlab::models::GroupRef;
use crate::gitlab::{GitLabClient, GitLabError, GroupProjectsQuery};
use crate::policy::{GroupSelection, PolicyKey};
use crate::sync::lock;
use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// A project listed in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The project's numeric id: its one identity in the engine.
    pub id: u64,
    /// Its full path (`path_with_namespace`), what `excludeProjects` matches.
    pub path: String,
}

/// Why a group's projects could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum GroupListingError {
    /// GitLab refused or failed the listing (404 for an unknown group or one the token cannot
    /// see, 403, 5xx, a transport failure).
    #[error("cannot list the projects of group {group}: {source}")]
    Listing {
        group: GroupRef,
        #[source]
        source: GitLabError,
    },
}

impl GroupListingError {
    /// The GitLab error underneath.
    pub fn gitlab_error(&self) -> &GitLabError {
        match self {
            GroupListingError::Listing { source, .. } => source,
        }
    }

    /// Takes the GitLab error underneath.
    pub fn into_gitlab_error(self) -> GitLabError {
        match self {
            GroupListingError::Listing { source, .. } => source,
        }
    }
}

/// A group's membership as one run sees it.
#[derive(Debug)]
pub struct Membership {
    /// The projects: the fresh listing, or the last good one when this run's listing failed
    /// (empty when there never was one).
    pub members: Arc<[GroupMember]>,
    /// This run's listing failed.
    pub failure: Option<GroupListingError>,
}

/// Which listing a membership is: one per instance, group and subgroup choice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MembershipKey {
    instance: String,
    /// The group as named, its full path in lowercase (GitLab finds groups
    /// case-insensitively).
    group: GroupRef,
    include_subgroups: bool,
}

impl MembershipKey {
    fn new(instance: &str, selection: &GroupSelection) -> MembershipKey {
        let group = match &selection.group {
            GroupRef::Id(id) => GroupRef::Id(*id),
            GroupRef::Path(path) => GroupRef::Path(path.to_ascii_lowercase()),
        };
        MembershipKey {
            instance: instance.to_owned(),
            group,
            include_subgroups: selection.include_subgroups,
        }
    }
}

/// The last good listing of a group.
struct Listing {
    members: Arc<[GroupMember]>,
    listed_at: Timestamp,
}

type ListingSlot = Arc<tokio::sync::Mutex<Option<Listing>>>;

/// The group memberships of every policy, each listed on its own refresh interval.
pub struct GroupMemberships {
    refresh_interval: SignedDuration,
    /// Most projects one listing reads: more than a policy may cover, so a bigger group fails
    /// the policy's run instead of filling memory.
    max_members: usize,
    listings: Mutex<HashMap<MembershipKey, ListingSlot>>,
    /// The memberships each policy used in its last run.
    used_by: Mutex<HashMap<PolicyKey, HashSet<MembershipKey>>>,
}

impl GroupMemberships {
    /// Memberships listed again after `refresh_interval`; a listing stops reading after
    /// `max_members` projects.
    pub fn new(refresh_interval: std::time::Duration, max_members: usize) -> GroupMemberships {
        GroupMemberships {
            refresh_interval: SignedDuration::try_from(refresh_interval)
                .unwrap_or(SignedDuration::MAX),
            max_members,
            listings: Mutex::new(HashMap::new()),
            used_by: Mutex::new(HashMap::new()),
        }
    }

    /// The members of `selection` on `instance`: the last listing while it is younger than the
    /// refresh interval, otherwise (with a `client`) a new listing. Without a client (a run that
    /// does not list: a suspended policy, a pass on Job Hook deliveries) the last listing, if
    /// any. The listing is locked while it is read, so a second policy on the group waits for
    /// it instead of listing again.
    pub async fn members(
        &self,
        client: Option<&GitLabClient>,
        instance: &str,
        selection: &GroupSelection,
        now: Timestamp,
    ) -> Membership {
        let slot = lock(&self.listings)
            .entry(MembershipKey::new(instance, selection))
            .or_default()
            .clone();
        let mut listing = slot.lock().await;
        let fresh = listing
            .as_ref()
            .is_some_and(|l| now.duration_since(l.listed_at) < self.refresh_interval);
        let Some(client) = client.filter(|_| !fresh) else {
            return Membership {
                members: last_good(&listing),
                failure: None,
            };
        };
        match self.list(client, selection).await {
            Ok(members) => {
                let members: Arc<[GroupMember]> = Arc::from(members);
                *listing = Some(Listing {
                    members: members.clone(),
                    listed_at: now,
                });
                Membership {
                    members,
                    failure: None,
                }
            }
            Err(err) => {
                tracing::warn!(group = %selection.group, error = %err, "cannot list the group's projects: its last listing stays");
                Membership {
                    members: last_good(&listing),
                    failure: Some(err),
                }
            }
        }
    }

    /// Lists the active projects of a group (of its subgroups too when asked), its own only:
    /// projects shared with it from other groups are not its members.
    async fn list(
        &self,
        client: &GitLabClient,
        selection: &GroupSelection,
    ) -> Result<Vec<GroupMember>, GroupListingError> {
        let query = GroupProjectsQuery::active_tree()
            .include_subgroups(selection.include_subgroups)
            .with_shared(false)
            .simple();
        client
            .list_group_projects(&selection.group, &query)
            .take(self.max_members.saturating_add(1))
            .map_ok(|project| GroupMember {
                id: project.id,
                path: project.path_with_namespace,
            })
            .try_collect()
            .await
            .map_err(|source| GroupListingError::Listing {
                group: selection.group.clone(),
                source,
            })
    }

    /// Records the groups `policy` names now (on `instance`); a membership no policy names any
    /// more is dropped.
    pub fn used_by(&self, policy: &PolicyKey, instance: &str, selections: &[GroupSelection]) {
        let keys = selections
            .iter()
            .map(|s| MembershipKey::new(instance, s))
            .collect();
        lock(&self.used_by).insert(policy.clone(), keys);
        self.drop_unused();
    }

    /// Forgets a policy that is gone, and the memberships only it used.
    pub fn forget_policy(&self, policy: &PolicyKey) {
        lock(&self.used_by).remove(policy);
        self.drop_unused();
    }

    /// How many group listings are kept.
    pub fn kept(&self) -> usize {
        lock(&self.listings).len()
    }

    fn drop_unused(&self) {
        let used: HashSet<MembershipKey> =
            lock(&self.used_by).values().flatten().cloned().collect();
        lock(&self.listings).retain(|key, _| used.contains(key));
    }
}

/// The members of the last good listing (none when there was none).
fn last_good(listing: &Option<Listing>) -> Arc<[GroupMember]> {
    listing
        .as_ref()
        .map(|l| l.members.clone())
        .unwrap_or_else(|| Arc::from(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selection(group: &str, include_subgroups: bool) -> GroupSelection {
        GroupSelection {
            group: GroupRef::parse(group),
            include_subgroups,
        }
    }

    #[test]
    fn one_listing_per_instance_group_and_subgroup_choice_whatever_the_case() {
        let a = MembershipKey::new("gitlab.example.com", &selection("Fleet/Platform", true));
        let b = MembershipKey::new("gitlab.example.com", &selection("fleet/platform", true));
        assert_eq!(a, b);
        assert_ne!(
            a,
            MembershipKey::new("gitlab.example.com", &selection("fleet/platform", false))
        );
        assert_ne!(
            a,
            MembershipKey::new("other.example.com", &selection("fleet/platform", true))
        );
        assert_ne!(
            MembershipKey::new("gitlab.example.com", &selection("42", true)),
            MembershipKey::new("gitlab.example.com", &selection("id:42", true))
        );
    }

    #[tokio::test]
    async fn memberships_no_policy_names_are_dropped() {
        let memberships = GroupMemberships::new(std::time::Duration::from_secs(300), 10);
        let now = Timestamp::UNIX_EPOCH;
        let (one, two) = (PolicyKey::new("ci", "one"), PolicyKey::new("ci", "two"));
        let fleet = [selection("fleet", true)];
        memberships.used_by(&one, "gitlab", &fleet);
        memberships.used_by(&two, "gitlab", &fleet);
        let listed = memberships.members(None, "gitlab", &fleet[0], now).await;
        assert!(listed.members.is_empty() && listed.failure.is_none());
        assert_eq!(memberships.kept(), 1);
        memberships.forget_policy(&one);
        assert_eq!(memberships.kept(), 1, "the other policy still names it");
        memberships.used_by(&two, "gitlab", &[]);
        assert_eq!(memberships.kept(), 0);
    }
}
