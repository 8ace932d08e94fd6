//! `type: javascript` — a user function `process(events)` that may drop,
//! modify, split or add events, run in an embedded, sandboxed QuickJS
//! engine with memory, stack and time limits.
//!
//! ```yaml
//! - type: javascript
//!   config:
//!     timeout_ms: 1000        # per batch (default 1000)
//!     memory_limit_mb: 64     # heap of this processor's engine (default 64)
//!     stack_limit_kb: 512     # (default 512)
//!     script: |
//!       function process(events) {
//!         return events
//!           .filter(e => e.op !== "d")
//!           .map(e => { e.after.total_cents = Math.round(e.after.amount * 100); return e; });
//!       }
//! ```
//!
//! **What the function sees.** `events` is an array of plain objects
//! `{id, op, before, after, source: {db, table, ts_ms}}`, where `id` is the
//! event's idempotency key, `op` is `"c"`, `"u"`, `"d"`, `"r"` or `"t"`
//! and `before`/`after` are objects (or null). The rest of the native
//! envelope (connector, positions, transaction, schema version) is not
//! handed over: a script cannot change it, and leaving it out halves the
//! cost of a batch. Values went through JSON: integers beyond ±2^53 lose
//! precision in JavaScript (QuickJS numbers are doubles), so keep such
//! columns as strings if the script touches them.
//!
//! **What it returns.** An array of such objects, in source order. Each
//! returned object is matched to the input event whose `id` it carries (so
//! `{...e, after: {...}}` keeps its origin); one without a known `id` is an
//! *added* event and takes the metadata of the batch's **last** event.
//! From the returned object DeltaForge reads `op` (default: the origin's),
//! `before`, `after` (null or an object), and `source.db`/`source.table`
//! (to reroute; default: the origin's). Everything else — the source
//! position, transaction, connector, timestamps, schema version and key
//! columns — is the origin's and cannot be forged. The first output of an
//! origin keeps its idempotency key; further outputs of the same origin
//! (splits and added events) get the index `2^31 + (index mod 2^24)·128 + k`
//! (k = 1…127), distinct and identical on replay when the batch is the same.
//! More than 127 extra outputs per event is an error. Returning events of
//! a later transaction before those of an earlier one is an error: the
//! checkpoint relies on source order.
//!
//! The script is evaluated once, as global code, when the pipeline starts:
//! top-level state (counters, lookup tables) persists across batches.
//! `process` must be synchronous (a returned Promise is an error).
//!
//! **Sandbox.** The engine is QuickJS's core language only (ECMAScript
//! built-ins plus `performance.now()`). It has no `require`, `import`
//! loader, `fetch`, `XMLHttpRequest`, `std`/`os` modules, file, socket,
//! process or environment access: none is registered, and scripts are
//! evaluated as global code without a module loader. Limits:
//! `memory_limit_mb` caps the engine's heap, `stack_limit_kb` its stack,
//! and `timeout_ms` bounds each batch through QuickJS's interrupt handler,
//! which stops even `while (true) {}`. After a limit breach the engine is
//! rebuilt from the script (its top-level state restarts).
//!
//! **Errors** name the processor and, when one event is at fault, the
//! event: when `process` throws, the batch is re-run one event at a time
//! (within a fresh `timeout_ms` budget) to find the first event that
//! throws, and the error reads e.g. `event #3 of the batch (id dg:42:0,
//! table demo.orders): script error: TypeError: cannot read property 'x'
//! of null at process (script.js:3:20)`. Scripts with side effects on
//! global state should know this re-run happens on errors only.
//!
//! **Why QuickJS via `rquickjs` 0.14:** measured here at ~6 µs/event for a
//! JSON round trip of a batch, +1.1 MB of binary, with memory/stack limits
//! and an interrupt hook; `deno_core` does not build offline (V8 download)
//! and `boa_engine` was 5× slower and +12 MB. Its runtime is not `Send`
//! (without the `parallel` feature), so each processor owns a dedicated
//! thread that holds the runtime; batches travel to it by channel, and the
//! event conversion runs there too, off the async workers. The batch is
//! handed over as one JSON text (`JSON.parse` in the engine) and returned
//! as one (`JSON.stringify`), converted on the Rust side by [`codec`]
//! without intermediate values. Measured per event (release, 8192-event
//! batches of 6-column rows, `cargo test --release -p deltaforge-processors
//! per_event_time -- --ignored --nocapture`): about 10.7 µs, of which
//! QuickJS's own `JSON.parse` and `JSON.stringify` are most; building the
//! objects property by property through the FFI is the next step if that
//! matters. This module never logs event values.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deltaforge_core::{Event, Op, Processor, ProcessorError};
use rquickjs::{CatchResultExt, CaughtError, Context, Function, Runtime};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::value::{describe, error};

mod codec;
use crate::ConfigProblem;

fn default_timeout() -> u64 {
    1000
}
fn default_memory() -> u64 {
    64
}
fn default_stack() -> u64 {
    512
}

/// Configuration of a `javascript` processor (see the module docs).
#[derive(Debug, Clone, Deserialize)]
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
    /// Stack limit of the engine, KiB (64..=65536); default 512.
    #[serde(default = "default_stack")]
    pub stack_limit_kb: u64,
}

impl JavascriptConfig {
    /// Checks the limits and compiles the script in a throw-away engine,
    /// so a syntax error or a missing `process` function is reported at
    /// validation time.
    pub fn check(&self) -> Result<(), ConfigProblem> {
        self.check_limits()?;
        Engine::new(self, Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false))).map(|_| ())
    }

    fn check_limits(&self) -> Result<(), ConfigProblem> {
        if !(1..=600_000).contains(&self.timeout_ms) {
            return Err(("timeout_ms".into(), format!("must be between 1 and 600000, got {}", self.timeout_ms)));
        }
        if !(1..=16_384).contains(&self.memory_limit_mb) {
            return Err((
                "memory_limit_mb".into(),
                format!("must be between 1 and 16384, got {}", self.memory_limit_mb),
            ));
        }
        if !(64..=65_536).contains(&self.stack_limit_kb) {
            return Err((
                "stack_limit_kb".into(),
                format!("must be between 64 and 65536, got {}", self.stack_limit_kb),
            ));
        }
        Ok(())
    }
}

/// Why a call into the engine failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum JsFailure {
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
    fn is_limit(&self) -> bool {
        matches!(self, JsFailure::Timeout(_) | JsFailure::Memory(_))
    }
}

/// One QuickJS runtime with the script loaded. Lives on its own thread.
struct Engine {
    // Field order matters: the context must drop before its runtime.
    context: Context,
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
    fn new(
        cfg: &JavascriptConfig,
        deadline: Arc<AtomicU64>,
        interrupted: Arc<AtomicBool>,
    ) -> Result<Self, ConfigProblem> {
        let script_err = |m: String| ("script".to_string(), m);
        let runtime =
            Runtime::new().map_err(|e| (String::new(), format!("cannot start the JavaScript engine: {e}")))?;
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
        let context =
            Context::full(&runtime).map_err(|e| (String::new(), format!("cannot create a JavaScript context: {e}")))?;
        let engine = Engine {
            context,
            _runtime: runtime,
            memory_mb: cfg.memory_limit_mb,
            stack_kb: cfg.stack_limit_kb,
            timeout_ms: cfg.timeout_ms,
            deadline,
            interrupted,
            epoch,
        };
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
                return Err(JsFailure::Script(
                    "the script must define a global function `process(events)` returning an array".into(),
                ));
            }
            Ok(())
        });
        engine.disarm();
        loaded.map_err(|e| script_err(e.to_string()))?;
        Ok(engine)
    }

    fn arm(&self) {
        self.interrupted.store(false, Ordering::Relaxed);
        let d = self.epoch.elapsed() + Duration::from_millis(self.timeout_ms);
        self.deadline.store(d.as_nanos() as u64, Ordering::Relaxed);
    }

    fn disarm(&self) {
        self.deadline.store(0, Ordering::Relaxed);
    }

    /// Classifies a caught error.
    fn failure(&self, e: CaughtError<'_>) -> JsFailure {
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

    /// Calls `process` on a JSON array text; returns the result as JSON text.
    fn call(&self, input: &str) -> Result<String, JsFailure> {
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

/// A batch for the engine thread.
struct Job {
    events: Vec<Event>,
    reply: oneshot::Sender<Result<Vec<Event>, ProcessorError>>,
}

/// The engine thread's state.
struct Worker {
    name: String,
    cfg: JavascriptConfig,
    engine: Option<Engine>,
    deadline: Arc<AtomicU64>,
    interrupted: Arc<AtomicBool>,
}

/// Index given to the k-th extra output (k ≥ 1) of an event with `index`.
fn derived_index(index: u32, k: usize) -> u32 {
    (1u32 << 31) | ((index & 0x00FF_FFFF) << 7) | (k as u32 & 0x7F)
}

impl Worker {
    fn engine(&mut self) -> Result<&Engine, ProcessorError> {
        if self.engine.is_none() {
            let e = Engine::new(&self.cfg, self.deadline.clone(), self.interrupted.clone())
                .map_err(|(_, m)| error(&self.name, None, m))?;
            self.engine = Some(e);
        }
        Ok(self.engine.as_ref().unwrap_or_else(|| unreachable!("set above")))
    }

    fn run(&mut self, events: Vec<Event>) -> Result<Vec<Event>, ProcessorError> {
        if events.is_empty() {
            return Ok(events);
        }
        let (input, ids) = codec::encode(&events)
            .map_err(|e| error(&self.name, None, format!("cannot encode the batch as JSON: {e}")))?;
        let result = self.engine()?.call(&input);
        let output = match result {
            Ok(text) => text,
            Err(f) => return Err(self.blame(&events, f)),
        };
        let returned = codec::decode(&output, &events, &ids)
            .map_err(|e| error(&self.name, None, format!("process(events) returned invalid JSON: {e}")))?;
        self.rebuild(events, returned)
    }

    /// Turns a failure into an error, pinpointing the event when the
    /// script threw.
    fn blame(&mut self, events: &[Event], f: JsFailure) -> ProcessorError {
        if f.is_limit() {
            // The engine may be in any state after a breach: start afresh.
            self.engine = None;
            return error(&self.name, None, format!("{f} while processing a batch of {} events", events.len()));
        }
        if events.len() > 1 {
            let budget = Instant::now() + Duration::from_millis(self.cfg.timeout_ms);
            for (i, e) in events.iter().enumerate() {
                if Instant::now() > budget {
                    break;
                }
                let Ok((one, _)) = codec::encode(std::slice::from_ref(e)) else { break };
                let Ok(engine) = self.engine() else { break };
                match engine.call(&one) {
                    Ok(_) => continue,
                    Err(single) => {
                        if single.is_limit() {
                            self.engine = None;
                        }
                        return error(&self.name, Some((i, e)), single);
                    }
                }
            }
            return error(
                &self.name,
                None,
                format!("{f} (batch of {} events; no single event reproduces it)", events.len()),
            );
        }
        error(&self.name, Some((0, &events[0])), f)
    }

    fn rebuild(&self, events: Vec<Event>, returned: Vec<codec::Output>) -> Result<Vec<Event>, ProcessorError> {
        // Transaction group of each input event, for the order check.
        let mut groups = Vec::with_capacity(events.len());
        let mut g = 0usize;
        for (i, e) in events.iter().enumerate() {
            if i > 0 && e.tx_position != events[i - 1].tx_position {
                g += 1;
            }
            groups.push(g);
        }
        let last = events.len() - 1;
        let origin_of = |o: &codec::Output| o.origin.unwrap_or(last);
        // An origin's rows move into its last output; earlier ones copy only its metadata.
        let mut remaining = vec![0usize; events.len()];
        for o in &returned {
            remaining[origin_of(o)] += 1;
        }
        let mut events: Vec<Option<Event>> = events.into_iter().map(Some).collect();
        let mut extra = vec![0usize; events.len()];
        let mut last_group = 0usize;
        let mut out = Vec::with_capacity(returned.len());
        for (j, o) in returned.into_iter().enumerate() {
            let fail = |m: String| error(&self.name, None, format!("returned event #{j}: {m}"));
            if let Some(kind) = o.not_object {
                return Err(fail(format!("must be an object like the input events, got {kind}")));
            }
            let origin_idx = origin_of(&o);
            let origin = events[origin_idx].as_ref().unwrap_or_else(|| unreachable!("moved only at its last use"));
            if groups[origin_idx] < last_group {
                // The script's fault, not the event's: a batch-level error.
                return Err(error(
                    &self.name,
                    None,
                    format!(
                        "returned event #{j} (from {}) comes after an event of a later transaction; \
                         keep source order across transactions",
                        describe(origin_idx, origin)
                    ),
                ));
            }
            last_group = groups[origin_idx];
            if extra[origin_idx] > 127 {
                return Err(error(
                    &self.name,
                    Some((origin_idx, origin)),
                    "process(events) returned more than 128 events for one input event",
                ));
            }
            let op = match &o.op {
                None => origin.op,
                Some(op) => op
                    .as_str()
                    .and_then(Op::from_code)
                    .ok_or_else(|| fail(format!("op must be one of \"c\", \"u\", \"d\", \"r\", \"t\", got {op}")))?,
            };
            let mut renamed = [None, None];
            for ((field, value), slot) in [("db", &o.db), ("table", &o.table)].into_iter().zip(&mut renamed) {
                let current = if field == "db" { &origin.source.db } else { &origin.source.table };
                match value {
                    None => {}
                    // Unchanged names keep their shared `Arc`.
                    Some(Value::String(s)) if !s.is_empty() && **current == **s => {}
                    Some(Value::String(s)) if !s.is_empty() => *slot = Some(Arc::<str>::from(s.as_str())),
                    Some(other) => {
                        return Err(fail(format!("source.{field} must be a non-empty string, got {}", kind(other))))
                    }
                }
            }
            let image = |name: &str, img: codec::Image| match img {
                codec::Image::Absent | codec::Image::Null => Ok(None),
                codec::Image::Row(r) => Ok(Some(r)),
                codec::Image::Invalid(k) => Err(fail(format!("{name} must be an object or null, got {k}"))),
            };
            let before = image("before", o.before)?;
            let after = image("after", o.after)?;
            remaining[origin_idx] -= 1;
            let mut e = if remaining[origin_idx] == 0 {
                events[origin_idx].take().unwrap_or_else(|| unreachable!("checked above"))
            } else {
                Event { before: None, after: None, ..metadata_of(origin) }
            };
            if extra[origin_idx] > 0 {
                e.index = derived_index(e.index, extra[origin_idx]);
            }
            extra[origin_idx] += 1;
            e.op = op;
            e.before = before;
            e.after = after;
            let [db, table] = renamed;
            if let Some(db) = db {
                e.source.db = db;
            }
            if let Some(table) = table {
                e.source.table = table;
            }
            out.push(e);
        }
        Ok(out)
    }
}

/// Everything of `e` but its row images, which the caller replaces.
fn metadata_of(e: &Event) -> Event {
    Event {
        op: e.op,
        before: None,
        after: None,
        source: e.source.clone(),
        tx_id: e.tx_id.clone(),
        tx_position: e.tx_position.clone(),
        index: e.index,
        schema_version: e.schema_version,
        key_columns: e.key_columns.clone(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The `javascript` processor: a handle to its engine thread.
pub struct JavascriptProcessor {
    name: String,
    jobs: mpsc::Sender<Job>,
    timeout: Duration,
}

impl std::fmt::Debug for JavascriptProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JavascriptProcessor").field("name", &self.name).finish_non_exhaustive()
    }
}

impl JavascriptProcessor {
    /// Starts the engine thread and loads the script; errors name the
    /// config field (`script` for syntax errors and a missing `process`).
    pub fn new(cfg: JavascriptConfig) -> Result<Self, ConfigProblem> {
        cfg.check_limits()?;
        let name = cfg.name.clone().unwrap_or_else(|| "javascript".into());
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), ConfigProblem>>();
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let thread_name = format!("js-{name}");
        let worker_name = name.clone();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let deadline = Arc::new(AtomicU64::new(0));
                let interrupted = Arc::new(AtomicBool::new(false));
                let engine = match Engine::new(&cfg, deadline.clone(), interrupted.clone()) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut worker = Worker { name: worker_name, cfg, engine: Some(engine), deadline, interrupted };
                while let Ok(job) = rx.recv() {
                    let result = worker.run(job.events);
                    let _ = job.reply.send(result);
                }
            })
            .map_err(|e| (String::new(), format!("cannot start the JavaScript thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| (String::new(), "the JavaScript thread ended while loading the script".to_string()))??;
        Ok(JavascriptProcessor { name, jobs, timeout })
    }
}

#[async_trait]
impl Processor for JavascriptProcessor {
    fn name(&self) -> &str {
        &self.name
    }

    async fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>, ProcessorError> {
        let (reply, rx) = oneshot::channel();
        let gone = || error(&self.name, None, "the JavaScript engine thread has stopped");
        self.jobs.send(Job { events, reply }).map_err(|_| gone())?;
        // The interrupt handler enforces the limit; this outer bound only
        // guards against an engine that stopped answering (the batch, the
        // bisection on error and the engine rebuild each get a budget).
        match tokio::time::timeout(self.timeout * 3 + Duration::from_secs(10), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(error(&self.name, None, "the JavaScript engine did not answer in time")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{after, insert, sequenced};
    use serde_json::json;

    fn cfg(script: &str) -> JavascriptConfig {
        JavascriptConfig {
            name: None,
            script: script.into(),
            timeout_ms: 1000,
            memory_limit_mb: 32,
            stack_limit_kb: 512,
        }
    }

    fn js(script: &str) -> JavascriptProcessor {
        JavascriptProcessor::new(cfg(script)).unwrap()
    }

    fn batch(n: u64) -> Vec<Event> {
        sequenced((1..=n).map(|i| insert("shop.orders", json!({"id": i, "amount": format!("{i}.50")}))).collect())
    }

    /// Runs `expr` (a JS expression) and returns its JSON value.
    async fn eval(expr: &str) -> Value {
        let script = format!("function process(events) {{ events[0].after.r = ({expr}); return events; }}");
        let out = js(&script).process(batch(1)).await.unwrap();
        after(&out[0])["r"].clone()
    }

    #[tokio::test]
    async fn transform_drop_and_reroute() {
        let mut p = js(r#"
            let seen = 0;
            function process(events) {
              seen += events.length;
              return events
                .filter(e => e.after.id % 2 === 1)
                .map(e => { e.after.cents = Math.round(parseFloat(e.after.amount) * 100);
                            e.after.seen = seen; e.source.table = "odd_orders"; return e; });
            }"#);
        let input = batch(4);
        let keys: Vec<String> = input.iter().map(Event::idempotency_key).collect();
        let out = p.process(input).await.unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(after(&out[0]), json!({"id": 1, "amount": "1.50", "cents": 150, "seen": 4}));
        assert_eq!(after(&out[1]), json!({"id": 3, "amount": "3.50", "cents": 350, "seen": 4}));
        assert_eq!(&*out[1].source.table, "odd_orders");
        assert_eq!(&*out[1].source.db, "shop");
        assert_eq!(out[0].idempotency_key(), keys[0], "origin metadata kept");
        assert_eq!(out[1].idempotency_key(), keys[2]);
        // State persists across batches.
        let out = p.process(batch(1)).await.unwrap();
        assert_eq!(after(&out[0])["seen"], 5);
    }

    #[tokio::test]
    async fn unchanged_columns_keep_the_shared_list() {
        let mut p = js("function process(events) { events.forEach(e => e.after.amount = '0'); return events; }");
        let input = batch(2);
        let out = p.process(input).await.unwrap();
        assert_eq!(after(&out[0])["amount"], "0");
        assert_eq!(out[0].op, Op::Create);
        assert!(out[0].before.is_none());
    }

    #[tokio::test]
    async fn split_and_added_events_get_distinct_stable_keys() {
        let mut p = js(r#"
            function process(events) {
              const out = [];
              for (const e of events) {
                out.push(e);
                out.push({...e, op: "u", before: e.after, after: {...e.after, copy: true}});
              }
              out.push({op: "c", after: {marker: "end"}});
              return out;
            }"#);
        let input = batch(2);
        let last_key = input[1].idempotency_key();
        let out = p.process(input.clone()).await.unwrap();
        assert_eq!(out.len(), 5);
        let keys: Vec<String> = out.iter().map(Event::idempotency_key).collect();
        let unique: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), 5, "{keys:?}");
        assert_eq!(keys[0], input[0].idempotency_key());
        assert_eq!(out[1].op, Op::Update);
        assert_eq!(after(&out[1])["copy"], true);
        assert_eq!(out[1].index, derived_index(0, 1));
        // The added event takes the last event's metadata, as its 2nd extra output.
        assert_eq!(out[4].tx_position, input[1].tx_position);
        assert_eq!(out[4].index, derived_index(0, 2));
        assert_ne!(keys[4], last_key);
        assert_eq!(after(&out[4]), json!({"marker": "end"}));
        // Same batch again: same keys (replay-stable).
        let again: Vec<String> = p.process(input).await.unwrap().iter().map(Event::idempotency_key).collect();
        assert_eq!(again, keys);
    }

    #[tokio::test]
    async fn reordering_transactions_is_refused() {
        let mut p = js("function process(events) { return events.reverse(); }");
        let err = p.process(batch(3)).await.unwrap_err();
        assert!(err.message.contains("later transaction"), "{}", err.message);
    }

    #[tokio::test]
    async fn infinite_loop_is_interrupted_within_the_time_limit() {
        let mut c = cfg("function process(events) { while (true) {} }");
        c.timeout_ms = 200;
        let mut p = JavascriptProcessor::new(c).unwrap();
        let start = Instant::now();
        let err = p.process(batch(3)).await.unwrap_err();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_millis(1500), "took {took:?}");
        assert_eq!(err.processor, "javascript");
        assert!(err.message.contains("time limit of 200 ms"), "{}", err.message);
        // try/catch cannot swallow the interrupt.
        let mut c = cfg("function process(events) { for (;;) { try { while (true) {} } catch (e) {} } }");
        c.timeout_ms = 100;
        let err = JavascriptProcessor::new(c).unwrap().process(batch(1)).await.unwrap_err();
        assert!(err.message.contains("time limit"), "{}", err.message);
        // Top-level code is bounded too.
        let mut c = cfg("while (true) {} function process(e) { return e; }");
        c.timeout_ms = 100;
        let (field, msg) = JavascriptProcessor::new(c).unwrap_err();
        assert_eq!(field, "script");
        assert!(msg.contains("time limit"), "{msg}");
    }

    #[tokio::test]
    async fn the_engine_recovers_after_a_limit_breach() {
        let mut c =
            cfg("function process(events) { if (events[0].after.id === 1) { while (true) {} } return events; }");
        c.timeout_ms = 100;
        let mut p = JavascriptProcessor::new(c).unwrap();
        assert!(p.process(batch(1)).await.is_err());
        let ok = p.process(sequenced(vec![insert("a.b", json!({"id": 2}))])).await.unwrap();
        assert_eq!(after(&ok[0])["id"], 2);
    }

    #[tokio::test]
    async fn unbounded_allocation_hits_the_memory_limit() {
        let mut c =
            cfg("function process(events) { const a = []; while (true) { a.push('x'.repeat(1024) + a.length); } }");
        c.memory_limit_mb = 16;
        c.timeout_ms = 20_000;
        let start = Instant::now();
        let err = JavascriptProcessor::new(c).unwrap().process(batch(1)).await.unwrap_err();
        assert!(err.message.contains("memory limit of 16 MB"), "{}", err.message);
        assert!(start.elapsed() < Duration::from_secs(15), "the memory limit, not the timeout, stopped it");
    }

    #[tokio::test]
    async fn deep_recursion_hits_the_stack_limit() {
        let err = js("function f(n) { return f(n + 1) + 1; } function process(events) { f(0); return events; }")
            .process(batch(1))
            .await
            .unwrap_err();
        assert!(err.message.contains("stack limit of 512 KB"), "{}", err.message);
    }

    #[tokio::test]
    async fn no_file_network_or_process_access() {
        for name in [
            "require",
            "fetch",
            "XMLHttpRequest",
            "WebSocket",
            "process_env",
            "std",
            "os",
            "Deno",
            "module",
            "exports",
            "importScripts",
            "scriptArgs",
            "print",
            "setTimeout",
        ] {
            assert_eq!(
                eval(&format!("typeof globalThis[{name:?}]")).await,
                json!("undefined"),
                "{name} must not exist"
            );
        }
        // `process` is the user's function, not Node's process object.
        assert_eq!(eval("typeof process").await, json!("function"));
        assert_eq!(eval("typeof globalThis.process.env").await, json!("undefined"));
        // No module loader: std/os cannot be imported.
        let (field, msg) =
            JavascriptProcessor::new(cfg("import * as os from 'os'; function process(e) { return e; }")).unwrap_err();
        assert_eq!(field, "script");
        assert!(msg.contains("SyntaxError"), "{msg}");
        // Dynamic import is refused (no module loader), even once its
        // promise jobs run.
        let c = cfg(r#"
            var outcome = "pending";
            import("os").then(() => { outcome = "imported"; }, e => { outcome = "refused: " + e; });
            function process(e) { return e; }"#);
        let engine = Engine::new(&c, Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false))).unwrap();
        while engine.context.runtime().is_job_pending() {
            let _ = engine.context.runtime().execute_pending_job();
        }
        let outcome: String = engine.context.with(|ctx| ctx.globals().get("outcome").unwrap());
        assert!(outcome.starts_with("refused: "), "{outcome}");
        assert!(outcome.contains("os"), "{outcome}");
    }

    #[tokio::test]
    async fn script_errors_name_the_event() {
        let mut p =
            js("function process(events) { return events.map(e => { if (e.after.id === 3) { null.x; } return e; }); }");
        let input = batch(4);
        let key = input[2].idempotency_key();
        let err = p.process(input).await.unwrap_err();
        assert_eq!(err.processor, "javascript");
        assert!(err.message.contains("event #2 of the batch"), "{}", err.message);
        assert!(err.message.contains(&key), "{}", err.message);
        assert!(err.message.contains("TypeError"), "{}", err.message);
        assert!(err.message.contains("script.js"), "stack with the script's line: {}", err.message);
        let err = js("function process(events) { throw 'nope'; }").process(batch(1)).await.unwrap_err();
        assert!(err.message.contains("uncaught \"nope\""), "{}", err.message);
    }

    #[tokio::test]
    async fn bad_results_are_clear_errors() {
        let cases = [
            ("return 5;", "must return an array"),
            ("return [5];", "returned event #0: must be an object"),
            ("return [{op: 'x'}];", "op must be one of"),
            ("return [{after: 'text'}];", "after must be an object or null"),
            ("return [{source: {table: ''}}];", "source.table must be a non-empty string"),
            ("return Promise.resolve(events);", "returned a Promise"),
        ];
        for (body, want) in cases {
            let err = js(&format!("function process(events) {{ {body} }}")).process(batch(1)).await.unwrap_err();
            assert!(err.message.contains(want), "{body}: {}", err.message);
        }
    }

    #[test]
    fn config_check_compiles_the_script() {
        assert!(cfg("function process(e) { return e; }").check().is_ok());
        let (field, msg) = cfg("function process(e) { return e; ").check().unwrap_err();
        assert_eq!(field, "script");
        assert!(msg.contains("SyntaxError"), "{msg}");
        let (field, msg) = cfg("function transform(e) { return e; }").check().unwrap_err();
        assert_eq!(field, "script");
        assert!(msg.contains("global function `process(events)`"), "{msg}");
        let mut c = cfg("function process(e) { return e; }");
        c.timeout_ms = 0;
        assert_eq!(c.check().unwrap_err().0, "timeout_ms");
        c.timeout_ms = 10;
        c.memory_limit_mb = 0;
        assert_eq!(c.check().unwrap_err().0, "memory_limit_mb");
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use crate::testutil::{insert, sequenced};
    use serde_json::json;

    /// Prints the per-event time of a small transform on an 8192-event
    /// batch (run with `--ignored --nocapture`; a measurement, not a check).
    #[tokio::test]
    #[ignore]
    async fn per_event_time() {
        let mut p = JavascriptProcessor::new(JavascriptConfig {
            name: None,
            script: "function process(events) { for (const e of events) { e.after.c = Math.round(parseFloat(e.after.amount) * 100); } return events; }".into(),
            timeout_ms: 60_000,
            memory_limit_mb: 256,
            stack_limit_kb: 512,
        })
        .unwrap();
        let mk = || {
            sequenced(
                (1..=8192u64)
                    .map(|i| insert("demo.orders", json!({"id": i, "customer_id": i % 1000, "amount": "12.50", "status": "paid", "note": "order x", "created_at": "2026-01-01T00:00:00.000Z"})))
                    .collect(),
            )
        };
        for _ in 0..3 {
            let batch = mk();
            let t = Instant::now();
            let out = p.process(batch).await.unwrap();
            eprintln!("{} events: {:.1} µs/event", out.len(), t.elapsed().as_secs_f64() * 1e6 / out.len() as f64);
        }
    }

    /// The floor QuickJS itself sets for the `javascript` processor, per
    /// event, on a datagen-shaped batch of 8192 (release: `cargo test
    /// --release -p deltaforge-processors per_event_js_floor -- --ignored
    /// --nocapture`): (a) `JSON.parse` of the batch text the processor
    /// sends, (b) the benchmark's transform on the parsed objects, (c)
    /// `JSON.stringify` of the result, (d) building the same objects
    /// property by property through the rquickjs API (ids precomputed, as
    /// (a) excludes encoding), with names as `&str` and as atoms made once.
    #[test]
    #[ignore = "benchmark; run in release with --ignored --nocapture"]
    fn per_event_js_floor() {
        use rquickjs::{Array, Atom, Object};
        let events = crate::bench::datagen_batch();
        let n = events.len() as f64;
        let (text, ids) = codec::encode(&events).unwrap();
        let rt = Runtime::new().unwrap();
        let context = Context::full(&rt).unwrap();
        const ROUNDS: usize = 11;
        let median = |mut xs: Vec<f64>| {
            xs.sort_by(f64::total_cmp);
            xs[xs.len() / 2]
        };
        let ns = |t: Instant| t.elapsed().as_secs_f64() * 1e9 / n;
        let (mut parse, mut transform, mut stringify, mut build_str, mut build_atoms) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        context.with(|ctx| {
            ctx.eval::<(), _>("globalThis.transform = function (events) { for (const e of events) { e.after.amount_cents = Math.round(parseFloat(e.after.amount) * 100); } return events; };")
                .unwrap();
        });
        for _ in 0..ROUNDS {
            context.with(|ctx| {
                let f: Function = ctx.globals().get("transform").unwrap();
                let t = Instant::now();
                let parsed = ctx.json_parse(text.as_str()).unwrap();
                parse.push(ns(t));
                let t = Instant::now();
                let ret: rquickjs::Value = f.call((parsed,)).unwrap();
                transform.push(ns(t));
                let t = Instant::now();
                let out = ctx.json_stringify(ret).unwrap().unwrap().to_string().unwrap();
                stringify.push(ns(t));
                assert!(out.len() > text.len());
            });
            rt.run_gc();
        }
        fn js_value<'js>(ctx: &rquickjs::Ctx<'js>, v: &Value) -> rquickjs::Value<'js> {
            match v {
                Value::Null => rquickjs::Value::new_null(ctx.clone()),
                Value::Bool(b) => rquickjs::Value::new_bool(ctx.clone(), *b),
                Value::Number(x) => match x.as_i64().and_then(|i| i32::try_from(i).ok()) {
                    Some(i) => rquickjs::Value::new_int(ctx.clone(), i),
                    None => rquickjs::Value::new_float(ctx.clone(), x.as_f64().unwrap_or(f64::NAN)),
                },
                Value::String(s) => rquickjs::String::from_str(ctx.clone(), s).unwrap().into_value(),
                other => panic!("datagen has no {other}"),
            }
        }
        // With `&str` names: each `set` looks the name up in the atom table.
        for _ in 0..ROUNDS {
            context.with(|ctx| {
                let t = Instant::now();
                let arr = Array::new(ctx.clone()).unwrap();
                for (i, (e, id)) in events.iter().zip(&ids).enumerate() {
                    let o = Object::new(ctx.clone()).unwrap();
                    o.set("id", id.as_str()).unwrap();
                    o.set("op", e.op.code()).unwrap();
                    o.set("before", rquickjs::Value::new_null(ctx.clone())).unwrap();
                    let after = Object::new(ctx.clone()).unwrap();
                    for (k, v) in e.after.as_ref().unwrap().iter() {
                        after.set(k, js_value(&ctx, v)).unwrap();
                    }
                    o.set("after", after).unwrap();
                    let source = Object::new(ctx.clone()).unwrap();
                    source.set("db", &*e.source.db).unwrap();
                    source.set("table", &*e.source.table).unwrap();
                    source.set("ts_ms", e.source.ts_ms as f64).unwrap();
                    o.set("source", source).unwrap();
                    arr.set(i, o).unwrap();
                }
                build_str.push(ns(t));
            });
            rt.run_gc();
        }
        // With atoms made once per batch for the fixed names and the column list.
        for _ in 0..ROUNDS {
            context.with(|ctx| {
                let t = Instant::now();
                let atom = |s: &str| Atom::from_str(ctx.clone(), s).unwrap();
                let (a_id, a_op, a_before, a_after, a_source) =
                    (atom("id"), atom("op"), atom("before"), atom("after"), atom("source"));
                let (a_db, a_table, a_ts) = (atom("db"), atom("table"), atom("ts_ms"));
                let columns: Vec<Atom<'_>> =
                    events[0].after.as_ref().unwrap().columns().iter().map(|c| atom(c)).collect();
                let arr = Array::new(ctx.clone()).unwrap();
                for (i, (e, id)) in events.iter().zip(&ids).enumerate() {
                    let o = Object::new(ctx.clone()).unwrap();
                    o.set(a_id.clone(), id.as_str()).unwrap();
                    o.set(a_op.clone(), e.op.code()).unwrap();
                    o.set(a_before.clone(), rquickjs::Value::new_null(ctx.clone())).unwrap();
                    let after = Object::new(ctx.clone()).unwrap();
                    for (k, v) in columns.iter().zip(e.after.as_ref().unwrap().values()) {
                        after.set(k.clone(), js_value(&ctx, v)).unwrap();
                    }
                    o.set(a_after.clone(), after).unwrap();
                    let source = Object::new(ctx.clone()).unwrap();
                    source.set(a_db.clone(), &*e.source.db).unwrap();
                    source.set(a_table.clone(), &*e.source.table).unwrap();
                    source.set(a_ts.clone(), e.source.ts_ms as f64).unwrap();
                    o.set(a_source.clone(), source).unwrap();
                    arr.set(i, o).unwrap();
                }
                build_atoms.push(ns(t));
            });
            rt.run_gc();
        }
        let (a, b, c) = (median(parse), median(transform), median(stringify));
        eprintln!("QuickJS floor, {} datagen events, medians of {ROUNDS} rounds, ns/event:", events.len());
        eprintln!("  (a) JSON.parse of the batch text ({} bytes/event): {a:.0}", text.len() / events.len());
        eprintln!("  (b) the benchmark's transform on parsed objects:  {b:.0}");
        eprintln!("  (c) JSON.stringify of the result:                 {c:.0}");
        eprintln!("  (a)+(b)+(c):                                      {:.0}", a + b + c);
        eprintln!("  (d) building the objects via the API, &str names: {:.0}", median(build_str));
        eprintln!("  (d) the same with atoms made once:                {:.0}", median(build_atoms));
    }
}
