//! The Rhai side of keyrot: the sandboxed engine and everything a policy can see —
//! the read-only `key`, times and durations with their operators, `now()`,
//! `config()`, and the decision constructors.

use std::sync::Arc;

use rhai::packages::{
    ArithmeticPackage, BasicArrayPackage, BasicBlobPackage, BasicFnPackage, BasicIteratorPackage,
    BasicMapPackage, BasicMathPackage, BasicStringPackage, BitFieldPackage, LogicPackage, MoreStringPackage,
    Package,
};
use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, NativeCallContext, FLOAT, INT};

use super::decision::{clean_reason, Decision, Verdict};
use crate::store::{Key, OwnerStatus};
use crate::time::{Dur, Time};

type RResult<T> = Result<T, Box<EvalAltResult>>;

/// Sandbox bounds for one evaluation of one key by one policy. Generous for any
/// honest policy (the shipped ones use a few hundred operations), tight enough that a
/// runaway one fails in milliseconds.
pub(crate) mod limits {
    pub(crate) const OPERATIONS: u64 = 200_000;
    pub(crate) const CALL_LEVELS: usize = 32;
    pub(crate) const EXPR_DEPTH: usize = 64;
    pub(crate) const FN_EXPR_DEPTH: usize = 32;
    pub(crate) const STRING_BYTES: usize = 64 * 1024;
    pub(crate) const ARRAY_ITEMS: usize = 10_000;
    pub(crate) const MAP_ITEMS: usize = 10_000;
    pub(crate) const VARIABLES: usize = 1_000;
    pub(crate) const FUNCTIONS: usize = 256;
    /// Wall-clock time one evaluation may take. The operations bound alone allows
    /// ~2 s per key when every operation copies a string near its size limit; an honest
    /// policy takes microseconds.
    pub(crate) const TIME_MS: u64 = 500;
}

rhai::def_package! {
    /// What policies get of Rhai's standard library: Rhai's `StandardPackage` without
    /// its `LanguageCorePackage`, whose `sleep()` blocks the thread (the rest of it —
    /// `exit`, `parse_json`, value tags, reflection — no policy needs), and without the
    /// debugging package's `back_trace()`. With the `no_time` and `no_module` features
    /// there is no `timestamp()` and no `import`; none of these packages touches files,
    /// the network, the environment or the clock.
    PolicyPackage(lib):
        ArithmeticPackage,
        BasicStringPackage,
        BasicIteratorPackage,
        BasicFnPackage,
        BitFieldPackage,
        LogicPackage,
        BasicMathPackage,
        BasicArrayPackage,
        BasicBlobPackage,
        BasicMapPackage,
        MoreStringPackage
    {
        // Nothing of its own: the packages above are all it is.
        let _ = lib;
    }
}

/// The wall-clock budget of one evaluation, kept per thread: Rhai counts each call's
/// operations from zero, so the clock is read first at the first checkpoint and then
/// every [`budget::EVERY`] operations. An evaluation that stays under the first
/// checkpoint (every honest policy: a few hundred operations) never reads the clock.
mod budget {
    use std::cell::Cell;
    use std::time::{Duration, Instant};

    pub(super) const EVERY: u64 = 256;

    thread_local! {
        static STARTED: Cell<Option<Instant>> = const { Cell::new(None) };
    }

    /// `on_progress`: `Some` stops the evaluation.
    pub(super) fn check(ops: u64) -> Option<rhai::Dynamic> {
        if ops % EVERY != 0 {
            return None;
        }
        let now = Instant::now();
        STARTED.with(|started| {
            if ops == EVERY {
                started.set(Some(now));
                return None;
            }
            let spent = now.duration_since(started.get()?);
            (spent > Duration::from_millis(super::limits::TIME_MS)).then(|| rhai::Dynamic::from(OVER_TIME))
        })
    }

    /// The token of an evaluation stopped for time.
    pub(crate) const OVER_TIME: &str = "keyrot:time-budget";
}

pub(crate) use budget::OVER_TIME;

/// What a policy sees as `key`: the stored fields plus the facts keyrot derives.
/// Cheap to clone (one reference count), and read-only: there are getters, no setters.
#[derive(Clone)]
pub struct KeyView(Arc<KeyFacts>);

/// What a key's view says about its owner (and what `watch`'s memo compares to tell
/// whether a key's decisions still hold).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerFacts {
    pub status: &'static str,
    pub team: Option<String>,
    pub departed_at: Option<Time>,
    /// Keys of the same owner stored as active, this one included.
    pub key_count: i64,
}

impl OwnerFacts {
    /// Whether these are `facts`' owner facts, compared in place (the memo asks this
    /// of every key at every re-plan: no copy of the team per key).
    pub fn describes(&self, facts: &KeyFacts) -> bool {
        self.status == facts.owner_status
            && self.team == facts.owner_team
            && self.departed_at == facts.owner_departed_at
            && self.key_count == facts.owner_key_count
    }
}

impl KeyFacts {
    /// The facts about the key's owner.
    pub fn owner(&self) -> OwnerFacts {
        OwnerFacts {
            status: self.owner_status,
            team: self.owner_team.clone(),
            departed_at: self.owner_departed_at,
            key_count: self.owner_key_count,
        }
    }
}

pub struct KeyFacts {
    pub key: Arc<Key>,
    pub owner_status: &'static str,
    pub owner_team: Option<String>,
    /// When a departed owner left, if `owners.toml` says.
    pub owner_departed_at: Option<Time>,
    pub owner_key_count: i64,
    pub age: Dur,
    pub idle: Dur,
}

impl KeyView {
    pub fn new(
        key: Arc<Key>,
        owner: Option<&crate::store::Owner>,
        owner_key_count: i64,
        now: Time,
    ) -> KeyView {
        let owner_status = match owner.map(|o| o.status) {
            Some(OwnerStatus::Active) => "active",
            Some(OwnerStatus::Departed) => "departed",
            None => "unknown",
        };
        let owner_facts = OwnerFacts {
            status: owner_status,
            team: owner.and_then(|o| o.team.clone()),
            departed_at: owner.and_then(|o| o.departed_at),
            key_count: owner_key_count,
        };
        KeyView::from_parts(key, owner_facts, now)
    }

    /// A view from its stored part and the facts about its owner; `age` and `idle` are
    /// derived at `now`.
    pub fn from_parts(key: Arc<Key>, owner: OwnerFacts, now: Time) -> KeyView {
        let age = now.since(key.rotated_at);
        let idle = now.since(key.last_used_at.unwrap_or(key.created_at));
        KeyView(Arc::new(KeyFacts {
            owner_status: owner.status,
            owner_team: owner.team,
            owner_departed_at: owner.departed_at,
            owner_key_count: owner.key_count,
            age,
            idle,
            key,
        }))
    }

    /// The same key seen at another instant.
    pub fn at(&self, now: Time) -> KeyView {
        let f = &self.0;
        KeyView::from_parts(f.key.clone(), f.owner(), now)
    }

    pub fn facts(&self) -> &KeyFacts {
        &self.0
    }
}

pub(crate) fn rt_err(msg: impl Into<String>) -> Box<EvalAltResult> {
    msg.into().into()
}

fn strings(v: &[String]) -> Array {
    v.iter()
        .map(|s| Dynamic::from(ImmutableString::from(s.as_str())))
        .collect()
}

fn opt_str(v: Option<&str>) -> Dynamic {
    v.map_or(Dynamic::UNIT, |s| Dynamic::from(ImmutableString::from(s)))
}

fn opt_time(v: Option<Time>) -> Dynamic {
    v.map_or(Dynamic::UNIT, Dynamic::from)
}

const ORDERING: [&str; 4] = ["<", "<=", ">", ">="];

fn ordering_error(a: &str, op: &str, b: &str) -> Box<EvalAltResult> {
    let unit_hint = if a == "()" || b == "()" {
        ": () is a missing value (an absent config() entry or an unset time such as last_used_at); test it with `== ()` or give a default with `??`"
    } else {
        ""
    };
    rt_err(format!("cannot compare {a} {op} {b}{unit_hint}"))
}

/// Registers `<`, `<=`, `>`, `>=` for a pair of types that must not be ordered, so
/// that `key.age > 90` or `key.idle > config().idle_days` (a missing entry) is an
/// error naming the policy, never Rhai's silent `false` for mixed types.
macro_rules! refuse_ordering {
    ($engine:expr, $A:ty, $an:expr, $B:ty, $bn:expr) => {
        for op in ORDERING {
            $engine.register_fn(op, move |_: $A, _: $B| -> RResult<bool> {
                Err(ordering_error($an, op, $bn))
            });
        }
    };
}

macro_rules! refuse_row {
    ($engine:expr, ($A:ty, $an:expr) vs $(($B:ty, $bn:expr)),*) => {
        $( refuse_ordering!($engine, $A, $an, $B, $bn); )*
    };
}

fn register_ordering_guards(engine: &mut Engine) {
    refuse_row!(engine, ((), "()") vs ((), "()"), (INT, "an integer"), (FLOAT, "a float"), (bool, "a bool"), (ImmutableString, "a string"), (Time, "a time"), (Dur, "a duration"));
    refuse_row!(engine, (INT, "an integer") vs ((), "()"), (bool, "a bool"), (ImmutableString, "a string"), (Time, "a time"), (Dur, "a duration"));
    refuse_row!(engine, (FLOAT, "a float") vs ((), "()"), (bool, "a bool"), (ImmutableString, "a string"), (Time, "a time"), (Dur, "a duration"));
    refuse_row!(engine, (bool, "a bool") vs ((), "()"), (INT, "an integer"), (FLOAT, "a float"), (ImmutableString, "a string"), (Time, "a time"), (Dur, "a duration"));
    refuse_row!(engine, (ImmutableString, "a string") vs ((), "()"), (INT, "an integer"), (FLOAT, "a float"), (bool, "a bool"), (Time, "a time"), (Dur, "a duration"));
    refuse_row!(engine, (Time, "a time") vs ((), "()"), (INT, "an integer"), (FLOAT, "a float"), (bool, "a bool"), (ImmutableString, "a string"), (Dur, "a duration"));
    refuse_row!(engine, (Dur, "a duration") vs ((), "()"), (INT, "an integer"), (FLOAT, "a float"), (bool, "a bool"), (ImmutableString, "a string"), (Time, "a time"));
}

macro_rules! register_comparisons {
    ($engine:expr, $T:ty) => {
        $engine
            .register_fn("==", |a: $T, b: $T| a == b)
            .register_fn("!=", |a: $T, b: $T| a != b)
            .register_fn("<", |a: $T, b: $T| a < b)
            .register_fn("<=", |a: $T, b: $T| a <= b)
            .register_fn(">", |a: $T, b: $T| a > b)
            .register_fn(">=", |a: $T, b: $T| a >= b);
    };
}

fn overflow() -> Box<EvalAltResult> {
    rt_err("time arithmetic overflowed")
}

fn register_time(engine: &mut Engine, clock: &Clock) {
    engine.register_type_with_name::<Time>("Time");
    engine.register_type_with_name::<Dur>("Duration");
    register_comparisons!(engine, Time);
    register_comparisons!(engine, Dur);

    match clock {
        Clock::Fixed(now) => {
            let now = *now;
            engine.register_fn("now", move || now);
        }
        Clock::Settable(cell) => {
            let cell = cell.clone();
            engine.register_fn("now", move || cell.get());
        }
    }
    engine
        .register_fn("time", |s: &str| Time::parse_rfc3339(s).map_err(rt_err))
        .register_fn("duration", |s: &str| Dur::parse(s).map_err(rt_err))
        .register_fn("days", |n: INT| Dur::days_n(n).ok_or_else(overflow))
        .register_fn("hours", |n: INT| Dur::hours_n(n).ok_or_else(overflow))
        .register_fn("minutes", |n: INT| Dur::minutes_n(n).ok_or_else(overflow))
        .register_get("days", |d: &mut Dur| d.days())
        .register_get("hours", |d: &mut Dur| d.hours())
        .register_get("minutes", |d: &mut Dur| d.minutes())
        .register_get("seconds", |d: &mut Dur| d.secs())
        .register_fn("-", |a: Time, b: Time| {
            a.unix()
                .checked_sub(b.unix())
                .map(Dur::from_secs)
                .ok_or_else(overflow)
        })
        .register_fn("+", |a: Time, d: Dur| a.checked_add(d).ok_or_else(overflow))
        .register_fn("+", |d: Dur, a: Time| a.checked_add(d).ok_or_else(overflow))
        .register_fn("-", |a: Time, d: Dur| a.checked_sub(d).ok_or_else(overflow))
        .register_fn("+", |a: Dur, b: Dur| {
            a.secs()
                .checked_add(b.secs())
                .map(Dur::from_secs)
                .ok_or_else(overflow)
        })
        .register_fn("-", |a: Dur, b: Dur| {
            a.secs()
                .checked_sub(b.secs())
                .map(Dur::from_secs)
                .ok_or_else(overflow)
        })
        .register_fn("-", |a: Dur| {
            a.secs().checked_neg().map(Dur::from_secs).ok_or_else(overflow)
        })
        .register_fn("*", |a: Dur, n: INT| {
            a.secs().checked_mul(n).map(Dur::from_secs).ok_or_else(overflow)
        })
        .register_fn("*", |n: INT, a: Dur| {
            a.secs().checked_mul(n).map(Dur::from_secs).ok_or_else(overflow)
        })
        .register_fn("/", |a: Dur, n: INT| {
            a.secs()
                .checked_div(n)
                .map(Dur::from_secs)
                .ok_or_else(|| rt_err("division of a duration by zero"))
        })
        .register_fn("to_string", |t: &mut Time| t.to_rfc3339())
        .register_fn("to_debug", |t: &mut Time| t.to_rfc3339())
        .register_fn("to_string", |d: &mut Dur| d.to_string())
        .register_fn("to_debug", |d: &mut Dur| d.to_string());
}

fn register_key(engine: &mut Engine) {
    engine.register_type_with_name::<KeyView>("Key");
    engine
        .register_get("id", |k: &mut KeyView| ImmutableString::from(k.0.key.id.as_str()))
        .register_get("folder", |k: &mut KeyView| {
            ImmutableString::from(k.0.key.folder.as_str())
        })
        .register_get("path", |k: &mut KeyView| {
            ImmutableString::from(k.0.key.path.as_str())
        })
        .register_get("service", |k: &mut KeyView| {
            ImmutableString::from(k.0.key.service.as_str())
        })
        .register_get("owner", |k: &mut KeyView| {
            ImmutableString::from(k.0.key.owner.as_str())
        })
        .register_get("owner_status", {
            // Made once: a string made per call is an allocation per key and policy.
            let names = ["active", "departed", "unknown"].map(ImmutableString::from);
            move |k: &mut KeyView| {
                names
                    .iter()
                    .find(|n| n.as_str() == k.0.owner_status)
                    .cloned()
                    .unwrap_or_else(|| ImmutableString::from(k.0.owner_status))
            }
        })
        .register_get("owner_team", |k: &mut KeyView| opt_str(k.0.owner_team.as_deref()))
        .register_get("owner_departed_at", |k: &mut KeyView| {
            opt_time(k.0.owner_departed_at)
        })
        .register_get("environment", |k: &mut KeyView| {
            ImmutableString::from(k.0.key.environment.as_str())
        })
        .register_get("permissions", |k: &mut KeyView| strings(&k.0.key.permissions))
        .register_get("ip_allowlist", |k: &mut KeyView| strings(&k.0.key.ip_allowlist))
        .register_get("tags", |k: &mut KeyView| strings(&k.0.key.tags))
        .register_get("compromised", |k: &mut KeyView| k.0.key.compromised)
        .register_get("status", |k: &mut KeyView| {
            ImmutableString::from(k.0.key.status.as_str())
        })
        .register_get("created_at", |k: &mut KeyView| k.0.key.created_at)
        .register_get("rotated_at", |k: &mut KeyView| k.0.key.rotated_at)
        .register_get("last_used_at", |k: &mut KeyView| opt_time(k.0.key.last_used_at))
        .register_get("last_used_from", |k: &mut KeyView| {
            strings(&k.0.key.last_used_from)
        })
        .register_get("age", |k: &mut KeyView| k.0.age)
        .register_get("idle", |k: &mut KeyView| k.0.idle)
        .register_get("owner_key_count", |k: &mut KeyView| k.0.owner_key_count)
        .register_fn("has_permission", |k: &mut KeyView, p: &str| {
            k.0.key.permissions.iter().any(|x| x == p)
        })
        .register_fn("has_tag", |k: &mut KeyView, t: &str| {
            k.0.key.tags.iter().any(|x| x == t)
        })
        .register_fn("to_string", |k: &mut KeyView| k.0.key.id.clone())
        .register_fn("to_debug", |k: &mut KeyView| format!("Key({})", k.0.key.id));
    engine.register_fn("in_allowlist", in_allowlist);
}

/// `in_allowlist(ip, key.ip_allowlist)`: whether the address is inside one of the
/// blocks. A string that is not an address or a block is an error naming it, never a
/// silent `false` that would make a rule fire (or not) on a typo.
fn in_allowlist(ip: &str, allowlist: Array) -> RResult<bool> {
    let addr: std::net::IpAddr = ip
        .parse()
        .map_err(|_| rt_err(format!("in_allowlist: `{ip}` is not an IP address")))?;
    for block in allowlist {
        let block = block.into_immutable_string().map_err(|t| {
            rt_err(format!(
                "in_allowlist: the allowlist holds a {t}, not a CIDR string"
            ))
        })?;
        match crate::store::key::cidr_contains(&block, addr) {
            Some(true) => return Ok(true),
            Some(false) => {}
            None => return Err(rt_err(format!("in_allowlist: `{block}` is not a CIDR block"))),
        }
    }
    Ok(false)
}

fn decision(verdict: Verdict, reason: &str) -> RResult<Decision> {
    Ok(Decision {
        verdict,
        reason: clean_reason(reason).map_err(rt_err)?,
    })
}

fn permission_list(perms: Array) -> RResult<Vec<String>> {
    let mut out = Vec::with_capacity(perms.len());
    for p in perms {
        let type_name = p.type_name();
        let s = p
            .into_immutable_string()
            .map_err(|_| rt_err(format!("restrict: permissions must be strings, not {type_name}")))?;
        crate::store::key::check_permission(&s).map_err(|why| rt_err(format!("restrict: {why}")))?;
        if !out.iter().any(|x: &String| x == s.as_str()) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

fn register_decisions(engine: &mut Engine) {
    engine.register_type_with_name::<Decision>("Decision");
    engine
        .register_fn("rotate", |reason: &str| {
            decision(Verdict::Rotate { grace: None }, reason)
        })
        .register_fn("rotate", |reason: &str, grace: Dur| {
            crate::time::check_grace(grace).map_err(|why| rt_err(format!("rotate: {why}")))?;
            decision(Verdict::Rotate { grace: Some(grace) }, reason)
        })
        .register_fn("revoke", |reason: &str| decision(Verdict::Revoke, reason))
        .register_fn("restrict", |perms: Array, reason: &str| {
            decision(
                Verdict::Restrict {
                    remove: permission_list(perms)?,
                },
                reason,
            )
        })
        .register_fn("restrict", |perm: &str, reason: &str| {
            crate::store::key::check_permission(perm).map_err(|why| rt_err(format!("restrict: {why}")))?;
            decision(
                Verdict::Restrict {
                    remove: vec![perm.to_string()],
                },
                reason,
            )
        })
        .register_fn("warn", |reason: &str| decision(Verdict::Warn, reason))
        .register_get("action", |d: &mut Decision| ImmutableString::from(d.kind_name()))
        .register_get("reason", |d: &mut Decision| {
            ImmutableString::from(d.reason.as_str())
        })
        .register_fn("to_string", |d: &mut Decision| {
            format!("{}({})", d.kind_name(), d.reason)
        })
        .register_fn("to_debug", |d: &mut Decision| {
            format!("{}({:?})", d.kind_name(), d.reason)
        });
}

/// Where `now()` comes from: the run's single instant, or (in `keyrot test`) an
/// instant each test sets with `at(…)`.
#[derive(Clone)]
pub(crate) enum Clock {
    Fixed(Time),
    Settable(Instant),
}

/// A shared, settable instant.
#[derive(Clone, Default)]
pub struct Instant(Arc<std::sync::atomic::AtomicI64>);

impl Instant {
    pub fn new(t: Time) -> Instant {
        let i = Instant::default();
        i.set(t);
        i
    }

    pub fn get(&self) -> Time {
        Time::from_unix(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub fn set(&self, t: Time) {
        self.0.store(t.unix(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// Builds the sandboxed engine for one run. `configs[i]` is the `config()` of the
/// policy evaluated with tag `i`; `now` is the run's single evaluation instant.
pub(crate) fn engine(now: Time, configs: Arc<Vec<rhai::Map>>) -> Engine {
    engine_with(&Clock::Fixed(now), configs)
}

/// [`engine`] with any clock.
pub(crate) fn engine_with(clock: &Clock, configs: Arc<Vec<rhai::Map>>) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(PolicyPackage::new().as_shared_module());
    engine.disable_symbol("eval");
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    // Rhai's built-in fast path answers `false` for mixed-type comparisons before our
    // guards run; turn it off so `register_ordering_guards` is always consulted.
    engine.set_fast_operators(false);
    engine
        .set_max_operations(limits::OPERATIONS)
        .set_max_call_levels(limits::CALL_LEVELS)
        .set_max_expr_depths(limits::EXPR_DEPTH, limits::FN_EXPR_DEPTH)
        .set_max_string_size(limits::STRING_BYTES)
        .set_max_array_size(limits::ARRAY_ITEMS)
        .set_max_map_size(limits::MAP_ITEMS)
        .set_max_variables(limits::VARIABLES)
        .set_max_functions(limits::FUNCTIONS);
    engine.on_progress(budget::check);

    register_time(&mut engine, clock);
    register_key(&mut engine);
    register_decisions(&mut engine);
    register_ordering_guards(&mut engine);
    engine.register_fn("config", move |ctx: NativeCallContext| -> Dynamic {
        Dynamic::from_map(config_of(&ctx, &configs))
    });
    engine
}

/// The `config()` of the policy being evaluated: its index is the call's tag.
fn config_of(ctx: &NativeCallContext, configs: &[rhai::Map]) -> rhai::Map {
    let idx = ctx
        .tag()
        .and_then(|t| t.as_int().ok())
        .and_then(|i| usize::try_from(i).ok());
    idx.and_then(|i| configs.get(i)).cloned().unwrap_or_default()
}

/// A `config()` a test sets with `with_config(#{…})`, in place of `keyrot.toml`'s.
#[derive(Clone, Default)]
pub struct ConfigOverride(Arc<std::sync::Mutex<Option<rhai::Map>>>);

impl ConfigOverride {
    pub fn set(&self, map: Option<rhai::Map>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = map;
    }

    /// Makes `engine`'s `config()` answer the override when one is set.
    pub fn attach(&self, engine: &mut Engine, configs: Arc<Vec<rhai::Map>>) {
        let over = self.0.clone();
        engine.register_fn("config", move |ctx: NativeCallContext| -> Dynamic {
            let set = over
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            Dynamic::from_map(set.unwrap_or_else(|| config_of(&ctx, &configs)))
        });
    }
}

/// Converts a `[policy.<name>]` TOML table into the map `config()` returns.
pub(crate) fn config_map(table: &toml::Table) -> rhai::Map {
    table
        .iter()
        .map(|(k, v)| (k.as_str().into(), toml_to_dynamic(v)))
        .collect()
}

fn toml_to_dynamic(v: &toml::Value) -> Dynamic {
    match v {
        toml::Value::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
        toml::Value::Integer(i) => Dynamic::from_int(*i),
        toml::Value::Float(f) => Dynamic::from_float(*f),
        toml::Value::Boolean(b) => Dynamic::from_bool(*b),
        toml::Value::Datetime(d) => match Time::from_toml(d) {
            Ok(t) => Dynamic::from(t),
            Err(_) => Dynamic::from(ImmutableString::from(d.to_string())),
        },
        toml::Value::Array(a) => Dynamic::from_array(a.iter().map(toml_to_dynamic).collect()),
        toml::Value::Table(t) => Dynamic::from_map(config_map(t)),
    }
}
