//! The `javascript` processor's settings as written in the pipeline spec,
//! with their defaults and allowed ranges.
//!
//! It must never start an engine: compiling the script for
//! [`JavascriptConfig::check`] is the `engine` module's job, which keeps
//! this module a leaf that everything else may depend on.

use serde::Deserialize;

use deltaforge_core::ConfigProblem;

fn default_timeout() -> u64 {
    1000
}
fn default_memory() -> u64 {
    64
}
fn default_stack() -> u64 {
    512
}

/// Largest `stack_limit_kb` accepted: 16 MiB of JavaScript stack, far
/// beyond any sane recursion.
pub const MAX_STACK_LIMIT_KB: u64 = 16_384;

/// Stack the engine thread gets beyond `stack_limit_kb`: QuickJS checks
/// its limit only at function entries and in some built-ins, so native
/// frames (the parser, `JSON.stringify` of nested values, the Rust side)
/// run past it before the check fires. 4 MiB is 20× what was measured.
pub const STACK_MARGIN_KB: u64 = 4_096;

/// Configuration of a `javascript` processor (see the module docs).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JavascriptConfig {
    /// Name in metrics and errors; default `javascript`.
    #[serde(default)]
    pub name: Option<String>,
    /// The script; it must define a global function `process(events)`.
    pub script: String,
    /// Time limit per batch, milliseconds (1..=600000); default 1000.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Heap limit of the engine, MiB (1..=16384); default 64.
    #[serde(default = "default_memory")]
    pub memory_limit_mb: u64,
    /// Stack limit of the engine, KiB (64..=16384); default 512. The engine
    /// thread's own stack is this plus a 4 MiB margin, so a script that
    /// recurses without end gets a stack-limit error, never a crash.
    #[serde(default = "default_stack")]
    pub stack_limit_kb: u64,
}

impl JavascriptConfig {
    /// The ranges of `timeout_ms`, `memory_limit_mb` and `stack_limit_kb`.
    pub(super) fn check_limits(&self) -> Result<(), ConfigProblem> {
        if !(1..=600_000).contains(&self.timeout_ms) {
            return Err(ConfigProblem::new("timeout_ms", "must be between 1 and 600000 (milliseconds)"));
        }
        if !(1..=16_384).contains(&self.memory_limit_mb) {
            return Err(ConfigProblem::new("memory_limit_mb", "must be between 1 and 16384 (MiB)"));
        }
        if !(64..=MAX_STACK_LIMIT_KB).contains(&self.stack_limit_kb) {
            return Err(ConfigProblem::new(
                "stack_limit_kb",
                format!("must be between 64 and {MAX_STACK_LIMIT_KB} (KiB)"),
            ));
        }
        Ok(())
    }

    /// The stack size of a thread that runs this engine: the limit plus
    /// [`STACK_MARGIN_KB`].
    pub(super) fn thread_stack_bytes(&self) -> usize {
        ((self.stack_limit_kb.min(MAX_STACK_LIMIT_KB) + STACK_MARGIN_KB) as usize) << 10
    }
}
