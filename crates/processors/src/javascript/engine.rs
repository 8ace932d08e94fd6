//! One sandboxed QuickJS runtime with the script loaded: the memory and
//! stack limits, the time limit enforced through the interrupt handler,
//! and the classification of what went wrong in a call ([`JsFailure`]).
//!
//! It runs one call at a time on the thread that owns it; it must never
//! register a module loader, a file, network, process or environment API,
//! and never look at event values (it hands the batch to [`super::objects`]
//! to build and read back, or takes JSON text).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rquickjs::{CatchResultExt, CaughtError, Context, Function, Runtime};

use deltaforge_core::{ComponentConfig, ConfigProblem, Event};

use super::codec::Output;
use super::objects::{self, Atoms};

use super::config::JavascriptConfig;

impl ComponentConfig for JavascriptConfig {
    /// Checks the limits and compiles the script without running any of
    /// it, in a throw-away engine on a thread of its own whose stack is the
    /// engine's (limit plus margin). Validation runs on an async worker of
    /// the REST API: it must neither wait for the script's code (its
    /// top-level code runs when the pipeline starts, on the engine thread)
    /// nor risk the worker's stack. A syntax error is reported here; so is
    /// a script that never mentions `process`. Whether `process` really is
    /// a function is known only once the top-level code has run, when the
    /// pipeline starts.
    fn check(&self) -> Result<(), ConfigProblem> {
        self.check_limits()?;
        let cfg = self.clone();
        std::thread::Builder::new()
            .name("js-check".into())
            .stack_size(self.thread_stack_bytes())
            .spawn(move || Engine::compile_only(&cfg))
            .map_err(|e| ConfigProblem::new("", format!("cannot start the JavaScript check thread: {e}")))?
            .join()
            .map_err(|_| ConfigProblem::new("script", "the JavaScript compiler failed unexpectedly"))??;
        if !self.script.contains("process") {
            return Err(ConfigProblem::new("script", MISSING_PROCESS));
        }
        Ok(())
    }
}

/// The message for a script without a `process` function.
const MISSING_PROCESS: &str = "the script must define a global function `process(events)` returning an array";

/// Why a call into the engine failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(super) enum JsFailure {
    /// The script threw (or returned something unusable).
    #[error("script error: {0}")]
    Script(String),
    /// The time limit interrupted it.
    #[error("script exceeded its time limit of {0} ms (timeout_ms) and was interrupted")]
    Timeout(u64),
    /// The memory limit was hit.
    #[error("script exceeded its memory limit of {0} MB (memory_limit_mb)")]
    Memory(u64),
    /// The stack limit was hit.
    #[error("script exceeded its stack limit of {0} KB (stack_limit_kb): {1}")]
    Stack(u64, String),
}

impl JsFailure {
    /// Time and memory breaches leave the engine in an unknown state and
    /// are not attributed to one event; a stack overflow is an ordinary
    /// (catchable) error of the event that caused it.
    pub(super) fn is_limit(&self) -> bool {
        matches!(self, JsFailure::Timeout(_) | JsFailure::Memory(_))
    }
}

/// What `process` returned.
pub(super) enum Returned {
    /// Read through the engine's API.
    Objects(Vec<Output>),
    /// Its `JSON.stringify` text, for [`super::codec::decode`].
    Json(String),
}

/// One QuickJS runtime with the script loaded. Lives on its own thread.
pub(super) struct Engine {
    // Field order matters: the context must drop before its runtime.
    pub(super) context: Context,
    _runtime: Runtime,
    memory_mb: u64,
    stack_kb: u64,
    timeout_ms: u64,
    /// Deadline as nanoseconds since `epoch`; 0 = none.
    deadline: Arc<AtomicU64>,
    interrupted: Arc<AtomicBool>,
    epoch: Instant,
}

impl Engine {
    /// An engine with the script loaded: its top-level code has run (under
    /// the time limit) and `process` is a function. Must run on a thread
    /// whose stack is [`JavascriptConfig::thread_stack_bytes`].
    pub(super) fn new(
        cfg: &JavascriptConfig,
        deadline: Arc<AtomicU64>,
        interrupted: Arc<AtomicBool>,
    ) -> Result<Self, ConfigProblem> {
        let engine = Engine::empty(cfg, deadline, interrupted)?;
        // Top-level code runs under the same time limit as a batch.
        engine.arm();
        let loaded = engine.context.with(|ctx| -> Result<(), JsFailure> {
            let mut opts = rquickjs::context::EvalOptions::default();
            opts.global = true;
            opts.strict = false;
            opts.filename = Some("script.js".into());
            ctx.eval_with_options::<(), _>(cfg.script.as_str(), opts).catch(&ctx).map_err(|e| engine.failure(e))?;
            let f: rquickjs::Value = ctx.globals().get("process").catch(&ctx).map_err(|e| engine.failure(e))?;
            if !f.is_function() {
                return Err(JsFailure::Script(MISSING_PROCESS.into()));
            }
            Ok(())
        });
        engine.disarm();
        loaded.map_err(|e| ConfigProblem::new("script", e.to_string()))?;
        Ok(engine)
    }

    /// Compiles the script as a function body (`new Function(script)`)
    /// without calling it: syntax errors, and nothing of the script runs.
    /// Must run on a thread whose stack is
    /// [`JavascriptConfig::thread_stack_bytes`].
    pub(super) fn compile_only(cfg: &JavascriptConfig) -> Result<(), ConfigProblem> {
        let engine = Engine::empty(cfg, Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)))?;
        engine.arm();
        let compiled = engine.context.with(|ctx| -> Result<(), JsFailure> {
            ctx.globals().set("__deltaforge_script", cfg.script.as_str()).catch(&ctx).map_err(|e| engine.failure(e))?;
            let mut opts = rquickjs::context::EvalOptions::default();
            opts.global = true;
            opts.filename = Some("script.js".into());
            ctx.eval_with_options::<(), _>("void new Function(__deltaforge_script)", opts)
                .catch(&ctx)
                .map_err(|e| engine.failure(e))
        });
        engine.disarm();
        compiled.map_err(|e| ConfigProblem::new("script", e.to_string()))
    }

    /// A runtime with the limits set and an empty context.
    fn empty(
        cfg: &JavascriptConfig,
        deadline: Arc<AtomicU64>,
        interrupted: Arc<AtomicBool>,
    ) -> Result<Self, ConfigProblem> {
        let runtime =
            Runtime::new().map_err(|e| ConfigProblem::new("", format!("cannot start the JavaScript engine: {e}")))?;
        runtime.set_memory_limit((cfg.memory_limit_mb as usize) << 20);
        runtime.set_max_stack_size((cfg.stack_limit_kb as usize) << 10);
        let epoch = Instant::now();
        {
            let deadline = deadline.clone();
            let interrupted = interrupted.clone();
            runtime.set_interrupt_handler(Some(Box::new(move || {
                let d = deadline.load(Ordering::Relaxed);
                if d != 0 && epoch.elapsed().as_nanos() as u64 > d {
                    interrupted.store(true, Ordering::Relaxed);
                    true
                } else {
                    false
                }
            })));
        }
        let context = Context::full(&runtime)
            .map_err(|e| ConfigProblem::new("", format!("cannot create a JavaScript context: {e}")))?;
        Ok(Engine {
            context,
            _runtime: runtime,
            memory_mb: cfg.memory_limit_mb,
            stack_kb: cfg.stack_limit_kb,
            timeout_ms: cfg.timeout_ms,
            deadline,
            interrupted,
            epoch,
        })
    }

    pub(super) fn arm(&self) {
        self.interrupted.store(false, Ordering::Relaxed);
        let d = self.epoch.elapsed() + Duration::from_millis(self.timeout_ms);
        self.deadline.store(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(super) fn disarm(&self) {
        self.deadline.store(0, Ordering::Relaxed);
    }

    /// Classifies a caught error.
    pub(super) fn failure(&self, e: CaughtError<'_>) -> JsFailure {
        if self.interrupted.load(Ordering::Relaxed) {
            return JsFailure::Timeout(self.timeout_ms);
        }
        let text = match &e {
            CaughtError::Exception(ex) => {
                let msg = ex.message().unwrap_or_default();
                let name = ex.get::<_, String>("name").unwrap_or_else(|_| "Error".into());
                let stack = ex.stack().unwrap_or_default();
                let stack = stack.trim();
                if stack.is_empty() {
                    format!("{name}: {msg}")
                } else {
                    // The first frames locate the fault; a deep recursion would repeat one frame thousands of times.
                    let frames: Vec<&str> = stack.lines().map(str::trim).take(5).collect();
                    format!("{name}: {msg} {}", frames.join(" "))
                }
            }
            // QuickJS throws `null` when it cannot even allocate the
            // "out of memory" error object; a script throwing `null` on
            // purpose is rare enough to be reported the same way.
            CaughtError::Value(v) if v.is_null() => return JsFailure::Memory(self.memory_mb),
            CaughtError::Value(v) => {
                let shown = v
                    .ctx()
                    .json_stringify(v.clone())
                    .ok()
                    .flatten()
                    .and_then(|s| s.to_string().ok())
                    .unwrap_or_else(|| format!("{:?}", v.type_of()));
                format!("uncaught {shown}")
            }
            CaughtError::Error(rquickjs::Error::Allocation) => return JsFailure::Memory(self.memory_mb),
            CaughtError::Error(err) => err.to_string(),
        };
        if text.contains("out of memory") {
            JsFailure::Memory(self.memory_mb)
        } else if text.contains("stack overflow") || text.contains("Maximum call stack size exceeded") {
            JsFailure::Stack(self.stack_kb, text)
        } else {
            JsFailure::Script(text)
        }
    }

    /// Calls `process` on `events` handed over as objects ([`objects`]);
    /// returns what it gave back, read as objects, or as JSON text when
    /// the result holds something only `JSON.stringify` models.
    pub(super) fn call_events(&self, events: &[Event], ids: &[String]) -> Result<Returned, JsFailure> {
        self.arm();
        let out = self.context.with(|ctx| -> Result<Returned, JsFailure> {
            let fail = |e| self.failure(e);
            let f: Function = ctx.globals().get("process").catch(&ctx).map_err(fail)?;
            let mut atoms = Atoms::new(&ctx).catch(&ctx).map_err(fail)?;
            let arg = objects::build(&ctx, &mut atoms, events, ids).catch(&ctx).map_err(fail)?;
            let ret: rquickjs::Value = f.call((arg,)).catch(&ctx).map_err(fail)?;
            if ret.is_promise() {
                return Err(JsFailure::Script("process(events) returned a Promise; it must be synchronous".into()));
            }
            let Some(array) = ret.as_array() else {
                return Err(JsFailure::Script(format!(
                    "process(events) must return an array of events, got {}",
                    ret.type_name()
                )));
            };
            if let Some(read) = objects::read(&atoms, array, events, ids).catch(&ctx).map_err(fail)? {
                return Ok(Returned::Objects(read));
            }
            let s = ctx.json_stringify(ret).catch(&ctx).map_err(fail)?;
            s.ok_or_else(|| JsFailure::Script("process(events) returned a value JSON cannot represent".into()))?
                .to_string()
                .map(Returned::Json)
                .map_err(|e| JsFailure::Script(format!("result is not valid text: {e}")))
        });
        self.disarm();
        // Free garbage between batches, outside the time limit.
        self.context.runtime().run_gc();
        out
    }

    /// Calls `process` on a JSON array text; returns the result as JSON text.
    #[cfg(test)]
    pub(super) fn call(&self, input: &str) -> Result<String, JsFailure> {
        self.arm();
        let out = self.context.with(|ctx| -> Result<String, JsFailure> {
            let f: Function = ctx.globals().get("process").catch(&ctx).map_err(|e| self.failure(e))?;
            let arg = ctx.json_parse(input).catch(&ctx).map_err(|e| self.failure(e))?;
            let ret: rquickjs::Value = f.call((arg,)).catch(&ctx).map_err(|e| self.failure(e))?;
            if ret.is_promise() {
                return Err(JsFailure::Script("process(events) returned a Promise; it must be synchronous".into()));
            }
            if !ret.is_array() {
                return Err(JsFailure::Script(format!(
                    "process(events) must return an array of events, got {}",
                    ret.type_name()
                )));
            }
            let s = ctx.json_stringify(ret).catch(&ctx).map_err(|e| self.failure(e))?;
            s.ok_or_else(|| JsFailure::Script("process(events) returned a value JSON cannot represent".into()))?
                .to_string()
                .map_err(|e| JsFailure::Script(format!("result is not valid text: {e}")))
        });
        self.disarm();
        // Free garbage between batches, outside the time limit.
        self.context.runtime().run_gc();
        out
    }
}
