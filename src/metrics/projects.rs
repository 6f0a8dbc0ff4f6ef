//! The per-project series: `jobs{project,status}`, `job_pending_age_seconds{project}`,
//! `job_queued_duration_seconds{project,stage}` and `job_failures_total{project,stage,failure_reason}`.
//!
//! These are the only families whose size grows with the fleet: at 5,000 projects they are
//! about 190,000 of the exposition's lines. The `prometheus` crate keeps a metric object per
//! series (its label pairs, each histogram bucket twice for lock-free observation): about
//! 400 bytes a gauge and 1 KB a histogram, 23 MB at 5,000 projects. Here a project's series
//! are a few plain numbers in one map entry (a histogram is 14 bucket counts and a sum), and
//! each family is built for the exposition only while a scrape renders it, one family at a
//! time, so a scrape never holds every series at once.

use super::{PREFIX, QUEUED_DURATION_BUCKETS, bounded_token};
use crate::sync::lock;
use prometheus::TextEncoder;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The per-project series of every project, by project label.
#[derive(Debug, Default)]
pub(super) struct ProjectSeries {
    projects: Mutex<BTreeMap<Box<str>, Series>>,
}

/// One project's series.
#[derive(Debug, Default)]
struct Series {
    /// Jobs by status, sorted by status. A status reported once stays, at 0 when it drops out,
    /// so its series never freezes at its last count. Empty: the family has no series for the
    /// project (never reported, or forgotten).
    jobs: Vec<(&'static str, i64)>,
    /// Age of the oldest waiting job (0 when none); `None`: no series.
    pending_age: Option<f64>,
    /// Queued-duration histograms by stage, sorted by stage.
    queued: Vec<(Box<str>, Queued)>,
    /// Failure counts by (stage, failure reason), sorted.
    failures: Vec<(StageAndReason, u64)>,
}

/// The labels of a failure count besides the project.
type StageAndReason = (Box<str>, Box<str>);

impl Series {
    fn is_empty(&self) -> bool {
        self.jobs.is_empty()
            && self.pending_age.is_none()
            && self.queued.is_empty()
            && self.failures.is_empty()
    }
}

/// One histogram of [`QUEUED_DURATION_BUCKETS`]: the count of each bucket (not cumulative; the
/// last slot is `+Inf`) and the sum of the observations (72 bytes). A bucket counts up to
/// 4,294,967,295 jobs of one project and stage (136 years at one job a second), then stays.
#[derive(Debug, Default, Clone, Copy)]
struct Queued {
    counts: [u32; QUEUED_DURATION_BUCKETS.len() + 1],
    sum: f64,
}

impl Queued {
    fn observe(&mut self, seconds: f64) {
        let bucket = QUEUED_DURATION_BUCKETS.partition_point(|bound| *bound < seconds);
        self.counts[bucket] = self.counts[bucket].saturating_add(1);
        self.sum += seconds;
    }

    fn to_proto(self) -> Histogram {
        let mut cumulative = 0u64;
        let buckets = QUEUED_DURATION_BUCKETS
            .iter()
            .zip(self.counts)
            .map(|(bound, count)| {
                cumulative += u64::from(count);
                let mut bucket = Bucket::default();
                bucket.set_upper_bound(*bound);
                bucket.set_cumulative_count(cumulative);
                bucket
            })
            .collect();
        let mut histogram = Histogram::default();
        histogram.set_bucket(buckets);
        histogram.set_sample_count(self.counts.iter().copied().map(u64::from).sum());
        histogram.set_sample_sum(self.sum);
        histogram
    }
}

/// The entry of `key` in a vector sorted by key, inserted with `V::default()` if absent.
fn entry<'v, K: Ord + ?Sized, O: std::borrow::Borrow<K> + Ord, V: Default>(
    items: &'v mut Vec<(O, V)>,
    key: &K,
    owned: impl FnOnce() -> O,
) -> &'v mut V {
    let at = match items.binary_search_by(|(k, _)| k.borrow().cmp(key)) {
        Ok(at) => at,
        Err(at) => {
            items.insert(at, (owned(), V::default()));
            at
        }
    };
    &mut items[at].1
}

impl ProjectSeries {
    fn with_project<R>(&self, project: &str, f: impl FnOnce(&mut Series) -> R) -> R {
        let mut projects = lock(&self.projects);
        if let Some(series) = projects.get_mut(project) {
            return f(series);
        }
        f(projects.entry(project.into()).or_default())
    }

    /// A job of `project` in `stage` waited `seconds` for a runner (finite, not negative).
    pub(super) fn observe_queued(&self, project: &str, stage: &str, seconds: f64) {
        self.with_project(project, |series| {
            entry(&mut series.queued, stage, || stage.into()).observe(seconds);
        });
    }

    /// A job of `project` in `stage` failed with `reason` (already a bounded token).
    pub(super) fn count_failure(&self, project: &str, stage: &str, reason: &str) {
        self.with_project(project, |series| {
            let key = (Box::<str>::from(stage), Box::<str>::from(reason));
            *entry(&mut series.failures, &key, || key.clone()) += 1;
        });
    }

    /// Sets the job counts of `project` by status: free-form statuses become [`super::OTHER`],
    /// repeated ones are summed, statuses reported before and absent now are set to 0.
    pub(super) fn set_jobs(&self, project: &str, counts: &[(&'static str, i64)]) {
        self.with_project(project, |series| {
            for (_, count) in &mut series.jobs {
                *count = 0;
            }
            for &(status, count) in counts {
                let status = match bounded_token(status) {
                    std::borrow::Cow::Borrowed(status) => status,
                    std::borrow::Cow::Owned(_) => super::OTHER,
                };
                *entry(&mut series.jobs, status, || status) += count;
            }
        });
    }

    /// Sets the age of the oldest job of `project` waiting for a runner.
    pub(super) fn set_pending_age(&self, project: &str, seconds: f64) {
        self.with_project(project, |series| series.pending_age = Some(seconds));
    }

    /// Removes the gauges of `project` (`jobs`, `job_pending_age_seconds`); its counters and
    /// histograms are history and stay.
    pub(super) fn forget_gauges(&self, project: &str) {
        let mut projects = lock(&self.projects);
        if let Some(series) = projects.get_mut(project) {
            series.jobs = Vec::new();
            series.pending_age = None;
            if series.is_empty() {
                projects.remove(project);
            }
        }
    }

    /// The next piece of the four families in the text format, from where `cursor` stands:
    /// the series of at most [`PROJECTS_PER_PIECE`] projects of one family, the family's
    /// `# HELP` and `# TYPE` lines before its first piece. `None` once every family is rendered.
    /// The pieces of one scrape put together are the text the families would make whole.
    pub(super) fn render_next(&self, encoder: &TextEncoder, cursor: &mut Cursor) -> Option<String> {
        while let Some(&family) = Family::ALL.get(cursor.family) {
            let Some(mut built) = self.build(family, cursor) else {
                *cursor = Cursor {
                    family: cursor.family + 1,
                    ..Cursor::default()
                };
                continue;
            };
            if built.get_metric().is_empty() {
                continue;
            }
            let first = !cursor.started;
            if first {
                built.set_help(family.help().to_owned());
                cursor.started = true;
            }
            let mut out = String::new();
            if let Err(err) = encoder.encode_utf8(std::slice::from_ref(&built), &mut out) {
                tracing::error!(metric = built.name(), error = %err, "cannot encode metric");
                continue;
            }
            if !first {
                // Without a help text the encoder starts with the `# TYPE` line alone, which
                // the family's first piece already has.
                out = out
                    .split_once('\n')
                    .map_or_else(String::new, |(_, rest)| rest.to_owned());
            }
            return Some(out);
        }
        None
    }

    /// The series of `family` for the next [`PROJECTS_PER_PIECE`] projects after the cursor's,
    /// sorted by labels (as the registry sorts its own), without a help text; the cursor moves
    /// past them. `None` when no project is left.
    fn build(&self, family: Family, cursor: &mut Cursor) -> Option<MetricFamily> {
        use std::ops::Bound;
        let projects = lock(&self.projects);
        let from = cursor
            .after
            .as_deref()
            .map_or(Bound::Unbounded, Bound::Excluded);
        let mut metrics = Vec::new();
        let mut last = None;
        for (project, series) in projects
            .range::<str, _>((from, Bound::Unbounded))
            .take(PROJECTS_PER_PIECE)
        {
            series.build(family, project, &mut metrics);
            last = Some(project);
        }
        cursor.after = Some(last?.clone());
        drop(projects);
        let mut built = MetricFamily::default();
        built.set_name(format!("{PREFIX}_{}", family.name()));
        built.set_field_type(family.kind());
        built.set_metric(metrics);
        Some(built)
    }
}

/// How many projects' series of one family one piece of a scrape holds: a scrape's response
/// is sent piece by piece, so it never holds the text (15 MB at 5,000 projects) or the series
/// objects of a whole family at once.
const PROJECTS_PER_PIECE: usize = 64;

/// Where the rendering of the per-project families stands ([`ProjectSeries::render_next`]).
#[derive(Debug, Default)]
pub(super) struct Cursor {
    /// The index in [`Family::ALL`] of the family being rendered.
    family: usize,
    /// The last project rendered of that family.
    after: Option<Box<str>>,
    /// Whether the family's header was rendered.
    started: bool,
}

impl Series {
    /// Appends the series of `family` of project `project` to `metrics`.
    fn build(&self, family: Family, project: &str, metrics: &mut Vec<Metric>) {
        match family {
            Family::Jobs => {
                for (status, count) in &self.jobs {
                    let mut gauge = Gauge::default();
                    gauge.set_value(*count as f64);
                    let mut metric = Metric::from_gauge(gauge);
                    metric.set_label(labels(&[("project", project), ("status", status)]));
                    metrics.push(metric);
                }
            }
            Family::PendingAge => {
                if let Some(age) = self.pending_age {
                    let mut gauge = Gauge::default();
                    gauge.set_value(age);
                    let mut metric = Metric::from_gauge(gauge);
                    metric.set_label(labels(&[("project", project)]));
                    metrics.push(metric);
                }
            }
            Family::Queued => {
                for (stage, histogram) in &self.queued {
                    let mut metric = Metric::default();
                    metric.set_histogram(histogram.to_proto());
                    metric.set_label(labels(&[("project", project), ("stage", stage)]));
                    metrics.push(metric);
                }
            }
            Family::Failures => {
                for ((stage, reason), count) in &self.failures {
                    let mut counter = Counter::default();
                    counter.set_value(*count as f64);
                    let mut metric = Metric::default();
                    metric.set_counter(counter);
                    metric.set_label(labels(&[
                        ("failure_reason", reason),
                        ("project", project),
                        ("stage", stage),
                    ]));
                    metrics.push(metric);
                }
            }
        }
    }
}

/// Label pairs in the order given (by name, as the exposition sorts them).
fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value((*value).to_owned());
            pair
        })
        .collect()
}

/// The four per-project families.
#[derive(Debug, Clone, Copy)]
enum Family {
    Queued,
    Failures,
    Jobs,
    PendingAge,
}

impl Family {
    const ALL: [Family; 4] = [
        Family::Failures,
        Family::PendingAge,
        Family::Queued,
        Family::Jobs,
    ];

    fn name(self) -> &'static str {
        match self {
            Family::Queued => "job_queued_duration_seconds",
            Family::Failures => "job_failures_total",
            Family::Jobs => "jobs",
            Family::PendingAge => "job_pending_age_seconds",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Family::Queued => {
                "Time a job waited for a runner (GitLab's queued_duration), observed once per \
                 job that started after jobwarden began observing."
            }
            Family::Failures => {
                "Failed jobs, counted once per job that finished after jobwarden began \
                 observing, by GitLab failure_reason."
            }
            Family::Jobs => "Jobs currently seen per project and status.",
            Family::PendingAge => {
                "Age of the oldest job still waiting for a runner (0 when none is waiting)."
            }
        }
    }

    fn kind(self) -> MetricType {
        match self {
            Family::Queued => MetricType::HISTOGRAM,
            Family::Failures => MetricType::COUNTER,
            Family::Jobs | Family::PendingAge => MetricType::GAUGE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_each_observation_in_its_bucket_cumulatively() {
        let mut queued = Queued::default();
        for seconds in [0.5, 1.0, 1.5, 14_400.0, 20_000.0] {
            queued.observe(seconds);
        }
        let proto = queued.to_proto();
        let cumulative: Vec<u64> = proto
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        // le=1 holds 0.5 and 1.0 (bounds are inclusive), le=2 adds 1.5, le=14400 adds 14400.
        assert_eq!(cumulative[0], 2);
        assert_eq!(cumulative[1], 3);
        assert_eq!(cumulative[QUEUED_DURATION_BUCKETS.len() - 2], 3);
        assert_eq!(cumulative[QUEUED_DURATION_BUCKETS.len() - 1], 4);
        assert_eq!(proto.get_sample_count(), 5, "+Inf holds 20000 too");
        assert_eq!(
            proto.get_sample_sum(),
            0.5 + 1.0 + 1.5 + 14_400.0 + 20_000.0
        );
    }

    #[test]
    fn a_forgotten_project_without_history_leaves_nothing_behind() {
        let series = ProjectSeries::default();
        series.set_jobs("p", &[("pending", 1)]);
        series.set_pending_age("p", 3.0);
        series.forget_gauges("p");
        assert!(lock(&series.projects).is_empty());
        series.observe_queued("q", "build", 1.0);
        series.forget_gauges("q");
        assert_eq!(lock(&series.projects).len(), 1, "q's histogram is history");
    }
}
