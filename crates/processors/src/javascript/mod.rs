//! `type: javascript` — a user function `process(events)` that may drop,
//! modify, split or add events, run in an embedded, sandboxed QuickJS
//! engine with memory, stack and time limits.
//!
//! ```yaml
//! - type: javascript
//!   config:
//!     timeout_ms: 1000        # per batch (default 1000)
//!     memory_limit_mb: 64     # heap of this processor's engine (default 64)
//!     stack_limit_kb: 512     # (default 512, at most 16384)
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
//! cost of a batch. Values are what `JSON.parse` of the event's JSON would
//! give (the objects are built through the engine's API, not parsed, but
//! equal to it): text is a string (so decimals, kept as strings by the
//! sources, stay exact), integers are numbers, and integers beyond ±2^53
//! lose precision in JavaScript (QuickJS numbers are doubles), so keep such
//! columns as strings if the script touches them. What the script returns
//! is read as `JSON.stringify` would print it: `undefined` and functions
//! are left out of objects, `NaN` and `Infinity` become `null`, a `Date`
//! becomes its ISO text, a `BigInt` is an error.
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
//! `memory_limit_mb` caps the engine's heap, `stack_limit_kb` (64 to
//! 16384) its stack, and `timeout_ms` bounds each batch through QuickJS's
//! interrupt handler, which stops even `while (true) {}`. After a limit
//! breach the engine is rebuilt from the script (its top-level state
//! restarts). The engine thread's real stack is `stack_limit_kb` plus a
//! 4 MiB margin, so unbounded recursion, at any allowed limit, is a
//! stack-limit error of the event, never a crash of the process.
//!
//! **Validation** (`deltaforge validate`, `POST /pipelines`) only compiles
//! the script, on a short-lived thread with the engine's stack: no code of
//! the script runs on the caller's (async) thread, so validation never
//! waits for the script's time limit. Top-level code runs when the
//! pipeline starts, on the engine thread, off the async workers; that is
//! when a `process` that is not a function is reported.
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
//! built as objects through the engine's API, with property-name atoms
//! made once per column list ([`objects`]), and the result is read back
//! the same way; JSON text (`JSON.stringify`, read by [`codec`]) is used
//! only for results holding what only `JSON.stringify` models (a `Date`,
//! an object with `toJSON`, a `Map`, a `BigInt`…). `JSON.parse` and
//! `JSON.stringify` of the batch were most of the earlier cost (≈ 10.7 µs
//! per event; `cargo test --release -p deltaforge-processors
//! per_event_time -- --ignored --nocapture` measures it). This module
//! never logs event values.
//!
//! Layout, each module depending only on the ones listed before it:
//! `config` (the YAML settings), `codec` (the JSON view: the reference and
//! the fallback reader), `objects` (the batch as engine objects and back),
//! `engine` (one sandboxed QuickJS runtime and its limits),
//! `worker` (the engine thread: runs a batch, pins errors on events,
//! rebuilds events from what the script returned) and `processor` (the
//! async handle the pipeline holds). This facade only declares and
//! re-exports them.

mod codec;
mod config;
mod engine;
mod objects;
mod processor;
mod worker;

pub use config::JavascriptConfig;
pub use processor::JavascriptProcessor;

#[cfg(test)]
mod objects_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod timing;
