//! The batch handed to the script as JavaScript objects built through the
//! engine's API, and the script's result read back the same way: no JSON
//! text is written, parsed, stringified or parsed again on the way.
//!
//! Why not JSON: `JSON.parse` of the batch and `JSON.stringify` of the
//! result were most of the stage's cost (measured in `BENCHMARKS.md`,
//! 2.1 µs and 4.9 µs of ≈ 10.7 µs per event). Here property names are
//! atoms made once per column list and batch ([`Atoms`]), so building a
//! row is one property definition per value, and reading one back compares
//! atoms (integers) with the origin's to keep sharing its column list.
//!
//! **Fidelity.** What the script sees and what comes back are exactly what
//! the JSON round trip gave ([`super::codec`] stays the reference, and the
//! tests compare the two): numbers in the 32-bit range are integers, larger
//! ones doubles (as `JSON.parse` makes them: beyond ±2^53 they round, so
//! such columns should stay strings), text is text. Reading back follows
//! `JSON.stringify`: `undefined`, functions and symbols are left out of
//! objects and are `null` in arrays, non-finite numbers are `null`, an
//! integral number is an integer. Whatever this reader does not model — an
//! object with `toJSON` (a `Date`), a `BigInt`, a `Map`, a proxy, an error
//! object, nesting deeper than [`MAX_DEPTH`] (or a cycle) — makes it give
//! up on the whole result ([`read`] returns `None`); the engine then
//! stringifies the result and [`super::codec::decode`] reads it, so such
//! results behave exactly as before, errors included.
//!
//! This module never looks at what values mean and never logs them.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use deltaforge_core::{Columns, Event, Row};
use rquickjs::{Array, Atom, Ctx, Object, Type, Value as JsValue};
use serde_json::{Number, Value};

use super::codec::{Image, Origins, Output, RowLike};

/// Nesting beyond this (JSON columns inside rows) is left to `JSON.stringify`.
pub(super) const MAX_DEPTH: usize = 64;

/// Property-name atoms of one batch: the envelope's fields and each column
/// list's names, made once.
pub(super) struct Atoms<'js> {
    id: Atom<'js>,
    op: Atom<'js>,
    before: Atom<'js>,
    after: Atom<'js>,
    source: Atom<'js>,
    db: Atom<'js>,
    table: Atom<'js>,
    ts_ms: Atom<'js>,
    to_json: Atom<'js>,
    /// `Object.prototype`: only plain objects (and arrays) are read here.
    object_proto: JsValue<'js>,
    /// Column names per column list (keyed by the list's address: lists
    /// are shared per table and schema version).
    columns: HashMap<usize, Vec<Atom<'js>>>,
}

impl<'js> Atoms<'js> {
    /// The envelope's atoms.
    pub(super) fn new(ctx: &Ctx<'js>) -> rquickjs::Result<Self> {
        let a = |s: &str| Atom::from_str(ctx.clone(), s);
        Ok(Atoms {
            id: a("id")?,
            op: a("op")?,
            before: a("before")?,
            after: a("after")?,
            source: a("source")?,
            db: a("db")?,
            table: a("table")?,
            ts_ms: a("ts_ms")?,
            to_json: a("toJSON")?,
            object_proto: ctx.globals().get::<_, Object<'js>>("Object")?.get("prototype")?,
            columns: HashMap::new(),
        })
    }

    fn of(&mut self, ctx: &Ctx<'js>, cols: &Columns) -> rquickjs::Result<&[Atom<'js>]> {
        let key = Arc::as_ptr(cols) as *const () as usize;
        Ok(match self.columns.entry(key) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => {
                slot.insert(cols.iter().map(|c| Atom::from_str(ctx.clone(), c)).collect::<rquickjs::Result<Vec<_>>>()?)
            }
        })
    }

    fn known(&self, cols: &Columns) -> Option<&[Atom<'js>]> {
        self.columns.get(&(Arc::as_ptr(cols) as *const () as usize)).map(Vec::as_slice)
    }
}

/// The batch as an array of `{id, op, before, after, source: {db, table,
/// ts_ms}}` objects (the same view [`super::codec::encode`] writes as JSON).
pub(super) fn build<'js>(
    ctx: &Ctx<'js>,
    atoms: &mut Atoms<'js>,
    events: &[Event],
    ids: &[String],
) -> rquickjs::Result<Array<'js>> {
    let array = Array::new(ctx.clone())?;
    for (i, (e, id)) in events.iter().zip(ids).enumerate() {
        let o = Object::new(ctx.clone())?;
        o.set(atoms.id.clone(), id.as_str())?;
        o.set(atoms.op.clone(), e.op.code())?;
        let before = image(ctx, atoms, e.before.as_ref())?;
        o.set(atoms.before.clone(), before)?;
        let after = image(ctx, atoms, e.after.as_ref())?;
        o.set(atoms.after.clone(), after)?;
        let source = Object::new(ctx.clone())?;
        source.set(atoms.db.clone(), &*e.source.db)?;
        source.set(atoms.table.clone(), &*e.source.table)?;
        source.set(atoms.ts_ms.clone(), number(ctx, e.source.ts_ms as f64, i32::try_from(e.source.ts_ms).ok()))?;
        o.set(atoms.source.clone(), source)?;
        array.set(i, o)?;
    }
    Ok(array)
}

fn image<'js>(ctx: &Ctx<'js>, atoms: &mut Atoms<'js>, row: Option<&Row>) -> rquickjs::Result<JsValue<'js>> {
    let Some(row) = row else { return Ok(JsValue::new_null(ctx.clone())) };
    let names = atoms.of(ctx, row.columns())?;
    let o = Object::new(ctx.clone())?;
    for (name, v) in names.iter().zip(row.values()) {
        o.set(name.clone(), to_js(ctx, v)?)?;
    }
    Ok(o.into_value())
}

fn number<'js>(ctx: &Ctx<'js>, f: f64, small: Option<i32>) -> JsValue<'js> {
    match small {
        Some(i) => JsValue::new_int(ctx.clone(), i),
        None => JsValue::new_float(ctx.clone(), f),
    }
}

/// A JSON value as `JSON.parse` would make it.
fn to_js<'js>(ctx: &Ctx<'js>, v: &Value) -> rquickjs::Result<JsValue<'js>> {
    Ok(match v {
        Value::Null => JsValue::new_null(ctx.clone()),
        Value::Bool(b) => JsValue::new_bool(ctx.clone(), *b),
        Value::Number(n) => {
            let small = n.as_i64().and_then(|i| i32::try_from(i).ok());
            number(ctx, n.as_f64().unwrap_or(f64::NAN), small)
        }
        Value::String(s) => rquickjs::String::from_str(ctx.clone(), s)?.into_value(),
        Value::Array(items) => {
            let a = Array::new(ctx.clone())?;
            for (i, item) in items.iter().enumerate() {
                a.set(i, to_js(ctx, item)?)?;
            }
            a.into_value()
        }
        Value::Object(map) => {
            let o = Object::new(ctx.clone())?;
            for (k, item) in map {
                o.set(k.as_str(), to_js(ctx, item)?)?;
            }
            o.into_value()
        }
    })
}

/// The script's returned array read as [`Output`]s, or `None` when it
/// holds something only `JSON.stringify` models (see the module docs).
pub(super) fn read<'js>(
    atoms: &Atoms<'js>,
    ret: &Array<'js>,
    events: &[Event],
    ids: &[String],
) -> rquickjs::Result<Option<Vec<Output>>> {
    let reader = Reader { atoms, origins: Origins::new(events, ids) };
    let mut out = Vec::with_capacity(ret.len());
    let mut hint = 0usize;
    for i in 0..ret.len() {
        let v: JsValue<'js> = ret.get(i)?;
        let o = match v.type_of() {
            Type::Undefined | Type::Null | Type::Uninitialized | Type::Function | Type::Constructor | Type::Symbol => {
                kind_only("null")
            }
            Type::Bool => kind_only("a boolean"),
            Type::Int => kind_only("a number"),
            Type::Float => kind_only(if v.as_float().is_some_and(f64::is_finite) { "a number" } else { "null" }),
            Type::String => kind_only("a string"),
            Type::Array => kind_only("an array"),
            Type::Object => match reader.event(v.as_object().unwrap_or_else(|| unreachable!("an object")), hint)? {
                Some(o) => o,
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        if let Some(i) = o.origin {
            hint = i;
        }
        out.push(o);
    }
    Ok(Some(out))
}

fn kind_only(kind: &'static str) -> Output {
    Output { not_object: Some(kind), ..Output::default() }
}

struct Reader<'a, 'js> {
    atoms: &'a Atoms<'js>,
    origins: Origins<'a>,
}

impl<'js> Reader<'_, 'js> {
    /// Whether `JSON.stringify` would treat `o` other than as its own
    /// enumerable properties: not a plain object, or one with `toJSON`.
    fn special(&self, o: &Object<'js>) -> rquickjs::Result<bool> {
        let plain = o.get_prototype().is_some_and(|p| *p.as_value() == self.atoms.object_proto);
        Ok(!plain || !o.get::<_, JsValue<'js>>(self.atoms.to_json.clone())?.is_undefined())
    }

    fn event(&self, o: &Object<'js>, hint: usize) -> rquickjs::Result<Option<Output>> {
        if self.special(o)? {
            return Ok(None);
        }
        let mut out = Output::default();
        // `before`/`after` are read after `id`, whatever the property order.
        let (mut before, mut after) = (None, None);
        for prop in o.props::<Atom<'js>, JsValue<'js>>() {
            let (key, v) = prop?;
            if key == self.atoms.id {
                if let Some(s) = v.as_string() {
                    out.origin = self.origins.find(&s.to_string()?, hint);
                }
            } else if key == self.atoms.op {
                match json(self, &v, 0)? {
                    Json::Value(op) => out.op = Some(op),
                    Json::Omitted => {}
                    Json::GiveUp => return Ok(None),
                }
            } else if key == self.atoms.before {
                before = Some(v);
            } else if key == self.atoms.after {
                after = Some(v);
            } else if key == self.atoms.source {
                match json(self, &v, 0)? {
                    Json::Value(Value::Object(mut src)) => {
                        out.db = src.remove("db");
                        out.table = src.remove("table");
                    }
                    Json::GiveUp => return Ok(None),
                    _ => {}
                }
            }
        }
        // Until `id` is known, guess the next event in order: the guess
        // only decides whose column list may be shared.
        let events = self.origins.events;
        let origin = out.origin.unwrap_or((hint + 1).min(events.len().saturating_sub(1)));
        let ev = events.get(origin);
        if let Some(v) = before {
            let like = ev.and_then(|e| e.before.as_ref().or(e.after.as_ref()));
            match self.image(&v, like.map(Row::columns))? {
                Some(img) => out.before = img,
                None => return Ok(None),
            }
        }
        if let Some(v) = after {
            match self.image(&v, ev.and_then(|e| e.after.as_ref()).map(Row::columns))? {
                Some(img) => out.after = img,
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    /// A `before`/`after` value; `None`: give up.
    fn image(&self, v: &JsValue<'js>, like: Option<&Columns>) -> rquickjs::Result<Option<Image>> {
        Ok(Some(match v.type_of() {
            Type::Undefined | Type::Function | Type::Constructor | Type::Symbol => Image::Absent,
            Type::Null | Type::Uninitialized => Image::Null,
            Type::Bool => Image::Invalid("a boolean"),
            Type::Int => Image::Invalid("a number"),
            Type::Float if v.as_float().is_some_and(f64::is_finite) => Image::Invalid("a number"),
            Type::Float => Image::Null,
            Type::String => Image::Invalid("a string"),
            Type::Array => Image::Invalid("an array"),
            Type::Object => {
                let o = v.as_object().unwrap_or_else(|| unreachable!("an object"));
                match self.row(o, like)? {
                    Some(row) => Image::Row(row),
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        }))
    }

    /// A row object, sharing `like`'s column list while the names match.
    fn row(&self, o: &Object<'js>, like: Option<&Columns>) -> rquickjs::Result<Option<Row>> {
        if self.special(o)? {
            return Ok(None);
        }
        let like_atoms: &[Atom<'js>] = like.and_then(|c| self.atoms.known(c)).unwrap_or(&[]);
        let mut row = RowLike::new(like);
        for prop in o.props::<Atom<'js>, JsValue<'js>>() {
            let (key, v) = prop?;
            let value = match json(self, &v, 1)? {
                Json::Value(value) => value,
                Json::Omitted => continue,
                Json::GiveUp => return Ok(None),
            };
            let same = row.like_name().is_some() && like_atoms.get(row.next_index()) == Some(&key);
            row.push(same, || key.to_string().map(Arc::<str>::from), value)?;
        }
        Ok(Some(row.finish()))
    }
}

/// What `JSON.stringify` makes of a value.
enum Json {
    Value(Value),
    /// Left out of an object (`undefined`, a function, a symbol).
    Omitted,
    /// Only `JSON.stringify` can tell.
    GiveUp,
}

fn json<'js>(r: &Reader<'_, 'js>, v: &JsValue<'js>, depth: usize) -> rquickjs::Result<Json> {
    if depth > MAX_DEPTH {
        return Ok(Json::GiveUp);
    }
    Ok(Json::Value(match v.type_of() {
        Type::Undefined | Type::Function | Type::Constructor | Type::Symbol => return Ok(Json::Omitted),
        Type::Null | Type::Uninitialized => Value::Null,
        Type::Bool => Value::Bool(v.as_bool().unwrap_or_default()),
        Type::Int => Value::from(v.as_int().unwrap_or_default()),
        Type::Float => float(v.as_float().unwrap_or(f64::NAN)),
        Type::String => Value::String(v.as_string().map(|s| s.to_string()).transpose()?.unwrap_or_default()),
        Type::Array => {
            let a = v.as_array().unwrap_or_else(|| unreachable!("an array"));
            let mut items = Vec::with_capacity(a.len());
            for i in 0..a.len() {
                let item: JsValue<'js> = a.get(i)?;
                items.push(match json(r, &item, depth + 1)? {
                    Json::Value(x) => x,
                    Json::Omitted => Value::Null,
                    Json::GiveUp => return Ok(Json::GiveUp),
                });
            }
            Value::Array(items)
        }
        Type::Object => {
            let o = v.as_object().unwrap_or_else(|| unreachable!("an object"));
            if r.special(o)? {
                return Ok(Json::GiveUp);
            }
            let mut map = serde_json::Map::new();
            for prop in o.props::<Atom<'js>, JsValue<'js>>() {
                let (key, item) = prop?;
                match json(r, &item, depth + 1)? {
                    Json::Value(x) => {
                        map.insert(key.to_string()?, x);
                    }
                    Json::Omitted => {}
                    Json::GiveUp => return Ok(Json::GiveUp),
                }
            }
            Value::Object(map)
        }
        _ => return Ok(Json::GiveUp),
    }))
}

/// A double as `JSON.stringify` prints it and `serde_json` reads it back:
/// integral values below 1e21 print as digits (an integer when it fits 64
/// bits), non-finite ones as `null`. From 2^53 on, JavaScript prints the
/// shortest digits that identify the double, padded with zeros
/// (2^60 prints as `1152921504606847000`): that text is what is read.
fn float(f: f64) -> Value {
    if !f.is_finite() {
        return Value::Null;
    }
    if f.fract() == 0.0 && f.abs() < 1e21 {
        if f.abs() < 9_007_199_254_740_992.0 {
            // Exact: every integer below 2^53 prints as itself.
            return if f >= 0.0 { Value::from(f as u64) } else { Value::from(f as i64) };
        }
        let shortest = format!("{:e}", f.abs());
        let (mantissa, exp) = shortest.split_once('e').unwrap_or((&shortest, "0"));
        let mut digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
        let width = exp.parse::<usize>().unwrap_or(0) + 1;
        while digits.len() < width {
            digits.push('0');
        }
        let text = if f < 0.0 { format!("-{digits}") } else { digits };
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            return v;
        }
    }
    Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
}
