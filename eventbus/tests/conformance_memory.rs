//! The transport conformance suite (`eventbus::testing::conformance`) on
//! `memory://`, on tokio's paused clock: every scenario, every feature.

use eventbus::testing::conformance::{self, Features};

eventbus::conformance_tests!(Features::in_process(), conformance::memory());
