//! Policies: Rhai scripts compiled once per run and evaluated per key in a sandbox.

pub(crate) mod api;
pub(crate) mod config_use;
pub(crate) mod coverage;
pub(crate) mod decision;
pub(crate) mod testing;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, ParseError, Position, Scope, AST};

pub use api::KeyView;
pub use decision::{Decision, Verdict};

use crate::error::{Error, Problem};
use crate::store::{FileEntry, Settings};
use crate::time::Time;

/// One compiled policy.
pub struct Policy {
    pub name: String,
    /// Store-relative path of its source.
    pub path: String,
    /// The script's `const DESCRIPTION`, if any.
    pub description: Option<String>,
    pub ast: AST,
    /// Constants defined at the script's top level, visible to `evaluate`.
    globals: Scope<'static>,
    /// What its decisions depend on besides the key and the instant: its source and
    /// its `config()`. Equal identities decide alike (see [`crate::plan::Memo`]).
    pub identity: String,
}

/// Makes an engine like the one a set evaluates with (same API, clock and configs).
type EngineFactory = Box<dyn Fn() -> Engine + Send + Sync>;

/// Every policy of a store, ready to evaluate keys.
pub struct PolicySet {
    engine: Engine,
    /// A fresh copy of `engine`, for re-running a failed evaluation to find where it
    /// stopped (see [`locate`]).
    rebuild: EngineFactory,
    policies: Vec<Policy>,
    /// `config()` entries the policies read that `keyrot.toml` does not set.
    warnings: Vec<Problem>,
}

fn rhai_pos(pos: Position) -> Option<(usize, usize)> {
    match (pos.line(), pos.position()) {
        (Some(l), Some(c)) => Some((l, c)),
        (Some(l), None) => Some((l, 1)),
        _ => None,
    }
}

/// The innermost error of a Rhai failure (errors inside function calls are nested),
/// as a message without Rhai's own position suffix, plus that position.
fn describe(err: &EvalAltResult) -> (String, Option<(usize, usize)>) {
    let inner = err.unwrap_inner();
    let pos = rhai_pos(inner.position());
    let msg = match inner {
        EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "stopped after {} operations (the sandbox limit): an endless loop?",
            api::limits::OPERATIONS
        ),
        EvalAltResult::ErrorStackOverflow(_) => format!(
            "call depth exceeded the sandbox limit of {}: runaway recursion?",
            api::limits::CALL_LEVELS
        ),
        EvalAltResult::ErrorTerminated(token, _)
            if token.clone().into_immutable_string().ok().as_deref() == Some(api::OVER_TIME) =>
        {
            format!(
                "ran longer than the sandbox's time budget of {} ms for one evaluation",
                api::limits::TIME_MS
            )
        }
        other => {
            // Rhai appends " (line L, position C)"; keyrot prints the position itself.
            let text = other.to_string();
            match text.rfind(" (line ") {
                Some(i) if text.ends_with(')') => text[..i].to_string(),
                _ => text,
            }
        }
    };
    (msg, pos)
}

fn parse_problem(path: &str, err: &ParseError) -> Problem {
    Problem::at(path, rhai_pos(err.position()), err.err_type().to_string())
}

impl PolicySet {
    /// Compiles every policy file; checks each defines `fn evaluate(key)`, runs its top
    /// level (constants, `DESCRIPTION`), and that every `[policy.<name>]` table in the
    /// settings names a policy that exists. Returns all problems found.
    pub fn compile(files: &[FileEntry], settings: &Settings, now: Time) -> (PolicySet, Vec<Problem>) {
        PolicySet::compile_cached(files, settings, now, None)
    }

    /// [`PolicySet::compile`], reusing the compiled script of every file whose bytes
    /// are unchanged since it went through `cache`.
    pub fn compile_cached(
        files: &[FileEntry],
        settings: &Settings,
        now: Time,
        cache: Option<&AstCache>,
    ) -> (PolicySet, Vec<Problem>) {
        PolicySet::compile_with(files, settings, cache, move |configs| api::engine(now, configs))
    }

    /// [`PolicySet::compile`] for `keyrot test`: `now()` reads `instant`, and every
    /// line the policies run is recorded in `coverage`.
    pub fn compile_for_tests(
        files: &[FileEntry],
        settings: &Settings,
        instant: &api::Instant,
        config: &api::ConfigOverride,
        coverage: &coverage::Coverage,
    ) -> (PolicySet, Vec<Problem>) {
        let (instant, config, coverage) = (instant.clone(), config.clone(), coverage.clone());
        PolicySet::compile_with(files, settings, None, move |configs| {
            let mut engine = api::engine_with(&api::Clock::Settable(instant.clone()), configs.clone());
            config.attach(&mut engine, configs);
            coverage.attach(&mut engine);
            engine
        })
    }

    fn compile_with(
        files: &[FileEntry],
        settings: &Settings,
        cache: Option<&AstCache>,
        make_engine: impl Fn(std::sync::Arc<Vec<rhai::Map>>) -> Engine + Send + Sync + 'static,
    ) -> (PolicySet, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut named: Vec<(String, &FileEntry)> = Vec::new();
        for f in files {
            let file = f.path.rsplit('/').next().unwrap_or(&f.path);
            let name = file.strip_suffix(".rhai").unwrap_or(file).to_string();
            if !crate::store::layout::is_valid_policy_name(&name) {
                problems.push(Problem::new(
                    &f.path,
                    format!("`{name}` is not a valid policy name: use letters, digits, '-' and '_'"),
                ));
                continue;
            }
            named.push((name, f));
        }
        for name in settings.policy_config.keys() {
            if !named.iter().any(|(n, _)| n == name) {
                problems.push(Problem::at(
                    crate::store::files::SETTINGS_FILE,
                    settings.policy_config_pos.get(name).copied(),
                    format!(
                        "[policy.{name}] configures a policy that does not exist (no {}/{name}.rhai)",
                        settings.policies_dir
                    ),
                ));
            }
        }

        let configs: Vec<rhai::Map> = named
            .iter()
            .map(|(name, _)| {
                settings
                    .policy_config
                    .get(name)
                    .map(api::config_map)
                    .unwrap_or_default()
            })
            .collect();
        let configs = std::sync::Arc::new(configs);
        let mut engine = make_engine(configs.clone());

        let mut policies = Vec::new();
        for (idx, (name, f)) in named.into_iter().enumerate() {
            match compile_one(&mut engine, idx, &name, f, cache) {
                Ok(mut p) => {
                    p.identity = format!(
                        "{}\n{}\n{:?}",
                        f.path,
                        crate::digest::sha256_tagged(&f.bytes),
                        settings.policy_config.get(&name)
                    );
                    policies.push(p)
                }
                Err(p) => problems.push(p),
            }
        }
        engine.set_default_tag(Dynamic::UNIT);
        let rebuild: EngineFactory = Box::new(move || make_engine(configs.clone()));
        let warnings = unset_config_reads(&policies, settings);
        (
            PolicySet {
                engine,
                rebuild,
                policies,
                warnings,
            },
            problems,
        )
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// What every command that evaluates these policies tells the user: each
    /// `config()` entry a policy reads that `keyrot.toml` does not set (the policy's
    /// default applies, which may be a typo: `cfg.max_dayz ?? 30`). In file order.
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }

    /// The index of the policy with this name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.policies.iter().position(|p| p.name == name)
    }

    /// Evaluates one key against one policy (`keyrot test`, `keyrot explain`).
    pub fn evaluate_one(&self, idx: usize, key: &KeyView) -> Result<Vec<Decision>, Error> {
        let mut scope = self.policies[idx].globals.clone();
        call_evaluate(self, idx, &mut scope, key)
    }

    /// Evaluates one key against every policy, in policy-name order. Returns each
    /// decision with the index of the policy that made it. For many keys, use one
    /// [`Evaluator`] per thread instead.
    pub fn evaluate(&self, key: &KeyView) -> Result<Vec<(usize, Decision)>, Error> {
        self.evaluator().evaluate(key)
    }

    /// An evaluator with its own copy of each policy's top-level constants, reused
    /// from key to key (Rhai rewinds the scope after each call, and `evaluate` cannot
    /// change constants).
    pub fn evaluator(&self) -> Evaluator<'_> {
        Evaluator {
            set: self,
            scopes: self.policies.iter().map(|p| p.globals.clone()).collect(),
        }
    }
}

/// Evaluates keys against a [`PolicySet`]; not shared between threads.
pub struct Evaluator<'a> {
    set: &'a PolicySet,
    scopes: Vec<Scope<'static>>,
}

impl Evaluator<'_> {
    /// Evaluates one key against policy `idx` alone.
    pub fn evaluate_policy(&mut self, idx: usize, key: &KeyView) -> Result<Vec<Decision>, Error> {
        call_evaluate(self.set, idx, &mut self.scopes[idx], key)
    }

    /// See [`PolicySet::evaluate`].
    pub fn evaluate(&mut self, key: &KeyView) -> Result<Vec<(usize, Decision)>, Error> {
        let mut out = Vec::new();
        for (idx, scope) in self.scopes.iter_mut().enumerate() {
            for d in call_evaluate(self.set, idx, scope, key)? {
                out.push((idx, d));
            }
        }
        Ok(out)
    }
}

fn call_options(idx: usize) -> CallFnOptions<'static> {
    CallFnOptions::new()
        .eval_ast(false)
        .rewind_scope(true)
        .with_tag(idx as rhai::INT)
}

/// Runs one policy's `evaluate(key)` in the sandbox.
fn call_evaluate(
    set: &PolicySet,
    idx: usize,
    scope: &mut Scope<'static>,
    key: &KeyView,
) -> Result<Vec<Decision>, Error> {
    let policy = &set.policies[idx];
    let result = set.engine.call_fn_with_options::<Dynamic>(
        call_options(idx),
        scope,
        &policy.ast,
        "evaluate",
        (key.clone(),),
    );
    let fail = |message: String, pos: Option<(usize, usize)>| Error::Policy {
        policy: policy.name.clone(),
        key: key.facts().key.id.clone(),
        path: policy.path.clone(),
        pos,
        message,
    };
    let value = result.map_err(|e| {
        let (msg, pos) = describe(&e);
        // An evaluation that ran out of time is not run again to locate it: under the
        // debugger it is slower still (seen in a debug build: a loop of `contains` over
        // 10,000 values stopped after 5 s, and its located re-run took over 40 s).
        let timed_out = matches!(e.unwrap_inner(), EvalAltResult::ErrorTerminated(..));
        let pos = match pos {
            None if !timed_out => locate(set, idx, key),
            pos => pos,
        };
        fail(msg, pos)
    })?;
    decisions(value).map_err(|msg| fail(msg, None))
}

/// Where an evaluation that failed without a position stopped. Rhai passes a broken
/// bound (operations, call depth, size, time) up through every function call, giving
/// it each call's position on the way; the outermost call, `evaluate` itself, has
/// none. So the evaluation runs again, deterministically the same, with a debugger
/// noting each step's position: the last one is where it stopped. Only failures pay
/// for this; the evaluation engine never has a debugger.
fn locate(set: &PolicySet, idx: usize, key: &KeyView) -> Option<(usize, usize)> {
    use std::sync::{Arc, Mutex, PoisonError};
    let mut engine = (set.rebuild)();
    let last = Arc::new(Mutex::new(Position::NONE));
    let seen = last.clone();
    // Marked volatile, not deprecated, by Rhai; Cargo.lock pins the version.
    #[allow(deprecated)]
    engine.register_debugger(
        |_, debugger| debugger,
        move |_, event, _, _, pos| {
            // Steps only: leaving a function reports the function's end.
            if matches!(event, rhai::debugger::DebuggerEvent::Step) && !pos.is_none() {
                *seen.lock().unwrap_or_else(PoisonError::into_inner) = pos;
            }
            Ok(rhai::debugger::DebuggerCommand::StepInto)
        },
    );
    let policy = &set.policies[idx];
    let mut scope = policy.globals.clone();
    let _ = engine.call_fn_with_options::<Dynamic>(
        call_options(idx),
        &mut scope,
        &policy.ast,
        "evaluate",
        (key.clone(),),
    );
    let pos = *last.lock().unwrap_or_else(PoisonError::into_inner);
    rhai_pos(pos)
}

/// Accepts `()`, one decision, or an array of decisions.
fn decisions(value: Dynamic) -> Result<Vec<Decision>, String> {
    if value.is_unit() {
        return Ok(Vec::new());
    }
    if value.is::<Decision>() {
        return Ok(vec![value.cast::<Decision>()]);
    }
    if value.is_array() {
        let items = value.into_array().unwrap_or_default();
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let type_name = item.type_name();
            match item.try_cast::<Decision>() {
                Some(d) => out.push(d),
                None => {
                    return Err(format!(
                        "evaluate returned an array holding {type_name} at index {i}; an array may hold only decisions"
                    ))
                }
            }
        }
        return Ok(out);
    }
    Err(format!(
        "evaluate returned {}; it must return nothing, a decision (rotate, revoke, restrict, warn) or an array of decisions",
        value.type_name()
    ))
}

/// See [`PolicySet::warnings`].
fn unset_config_reads(policies: &[Policy], settings: &Settings) -> Vec<Problem> {
    let mut out = Vec::new();
    for policy in policies {
        let set = settings.policy_config.get(&policy.name);
        for (entry, pos) in &config_use::config_use(&policy.ast).reads {
            if !set.is_some_and(|t| t.contains_key(entry)) {
                out.push(Problem::at(
                    &policy.path,
                    Some(*pos),
                    format!(
                        "reads config().{entry}, which keyrot.toml does not set ([policy.{}] {entry}); the policy's default applies",
                        policy.name
                    ),
                ));
            }
        }
    }
    out.sort_by(|a, b| (&a.path, a.pos).cmp(&(&b.path, b.pos)));
    out
}

/// A compiled script and the bytes it was compiled from.
type CompiledFile = (std::sync::Arc<[u8]>, AST);

/// Compiled scripts by path, kept with the bytes they were compiled from (`watch`).
#[derive(Default)]
pub struct AstCache {
    asts: RefCell<HashMap<String, CompiledFile>>,
    compiles: Cell<usize>,
}

impl AstCache {
    /// How many scripts were compiled through this cache.
    pub fn compiles(&self) -> usize {
        self.compiles.get()
    }

    fn get_or_compile(&self, engine: &Engine, f: &FileEntry) -> Result<AST, Problem> {
        if let Some((bytes, ast)) = self.asts.borrow().get(&f.path) {
            if **bytes == *f.bytes {
                return Ok(ast.clone());
            }
        }
        self.compiles.set(self.compiles.get() + 1);
        let ast = compile_source(engine, f)?;
        self.asts
            .borrow_mut()
            .insert(f.path.clone(), (f.bytes.clone(), ast.clone()));
        Ok(ast)
    }
}

fn compile_source(engine: &Engine, f: &FileEntry) -> Result<AST, Problem> {
    let text =
        std::str::from_utf8(&f.bytes).map_err(|_| Problem::new(&f.path, "file is not valid UTF-8 text"))?;
    let mut ast = engine.compile(text).map_err(|e| parse_problem(&f.path, &e))?;
    ast.set_source(f.path.as_str());
    Ok(ast)
}

fn compile_one(
    engine: &mut Engine,
    idx: usize,
    name: &str,
    f: &FileEntry,
    cache: Option<&AstCache>,
) -> Result<Policy, Problem> {
    let ast = match cache {
        Some(cache) => cache.get_or_compile(engine, f)?,
        None => compile_source(engine, f)?,
    };
    if !ast
        .iter_functions()
        .any(|func| func.name == "evaluate" && func.params.len() == 1)
    {
        return Err(Problem::new(
            &f.path,
            "defines no `fn evaluate(key)`; every policy must have one",
        ));
    }
    // Run the top level once (with this policy's config() visible) to collect its
    // constants; `evaluate` then runs against them without re-running the top level.
    engine.set_default_tag(Dynamic::from_int(idx as rhai::INT));
    let mut globals = Scope::new();
    engine.run_ast_with_scope(&mut globals, &ast).map_err(|e| {
        let (msg, pos) = describe(&e);
        Problem::at(&f.path, pos, format!("policy {name}: top level: {msg}"))
    })?;
    let description = match globals.get("DESCRIPTION") {
        None => None,
        Some(d) if d.is_string() => Some(d.to_string()),
        Some(d) => {
            return Err(Problem::new(
                &f.path,
                format!("DESCRIPTION must be a string, not {}", d.type_name()),
            ))
        }
    };
    Ok(Policy {
        name: name.to_string(),
        path: f.path.clone(),
        description,
        ast,
        globals,
        identity: String::new(),
    })
}

#[cfg(test)]
mod tests;
