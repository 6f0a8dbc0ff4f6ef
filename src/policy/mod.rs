//! Policies: [`compile()`] turns a `JobPolicy` spec into a checked [`CompiledPolicy`], and
//! [`decide()`] (pure) turns a compiled policy, the observed jobs and the clock into decisions.

pub mod compile;
mod conditions;
pub mod decide;
pub mod delivery;
pub mod duration;
pub mod observation;
pub mod reasons;
pub mod window;

#[cfg(test)]
pub(crate) mod test_support;

pub use compile::{
    BackoffSchedule, CompiledPolicy, CompiledRule, Conditions, FieldError, GlobList,
    GroupSelection, PolicyKey, RuleAction, SpecErrors, compile,
};
pub use decide::{
    Action, Budget, Decision, FactRequest, Reach, Verdict, decide, earliest_action, facts_needed,
    may_act_on,
};
pub use delivery::{
    DeliveredFacts, DeliveredJob, DeliveredMove, DeliveryNeed, JobDelivery, delivery_need,
};
pub use observation::{Observation, ProjectJobs};
