//! Searching placements: which device holds which layers and which tensors,
//! for the best predicted speed under every device's memory limit.
//!
//! Every candidate a solver returns is re-simulated by [`crate::llamacpp`]
//! before it is shown: the planner never emits flags it has not simulated.

pub mod baseline;
pub mod costs;
pub mod dp;
pub mod exact;
pub mod flags;
pub mod layout;
pub mod milp;
pub mod plan;
pub mod ranges;
pub mod sim;
pub mod speed;
pub mod synthetic;
