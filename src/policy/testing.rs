//! `keyrot test`: policy tests written in Rhai, beside the policy they test.
//!
//! `policies/max-age_test.rhai` tests `policies/max-age.rhai`. Each `fn test_…()` is one
//! test, run in the same sandbox as policies, with helpers to build a key
//! (`key(#{…})`), fix the instant (`at(…)`), run the policy (`evaluate(k)`) and assert
//! on its decisions. The policy runs in an engine that records which of its lines ran.

use std::collections::BTreeSet;
use std::sync::Arc;

use rhai::{Array, CallFnOptions, Dynamic, Engine, EvalAltResult, Map, NativeCallContext, Scope, INT};

use super::api::{self, rt_err, ConfigOverride, Instant, KeyView};
use super::coverage::{self, Coverage};
use super::decision::{Decision, Verdict};
use super::{describe, PolicySet};
use crate::error::{Error, Problem};
use crate::store::layout::TEST_SUFFIX;
use crate::store::{FileEntry, Key, KeyStatus, Store};
use crate::time::{Dur, Time};

type RResult<T> = Result<T, Box<EvalAltResult>>;

/// The policy a test file tests: `policies/max-age_test.rhai` → `max-age`.
pub(crate) fn tested_policy(path: &str) -> Option<&str> {
    path.rsplit('/').next()?.strip_suffix(TEST_SUFFIX)
}

/// One test's result.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct TestResult {
    pub policy: String,
    pub name: String,
    /// The test file.
    pub path: String,
    pub passed: bool,
    /// On failure: `path:line:col: ` where known, then what was expected and what came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl TestResult {
    /// `max-age::test_withdraw_keys_rotate_at_30_days`: what the filter matches.
    pub(crate) fn full_name(&self) -> String {
        format!("{}::{}", self.policy, self.name)
    }
}

/// Everything one `keyrot test` run found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub tests: Vec<TestResult>,
    /// Test files that could not run at all (no such policy, does not compile).
    pub broken: Vec<Problem>,
    /// Per policy, in policy order.
    pub coverage: Vec<coverage::Report>,
}

impl Outcome {
    pub(crate) fn passed(&self) -> usize {
        self.tests.iter().filter(|t| t.passed).count()
    }

    pub(crate) fn failed(&self) -> usize {
        self.tests.len() - self.passed()
    }

    pub(crate) fn ok(&self) -> bool {
        self.failed() == 0 && self.broken.is_empty()
    }
}

/// Runs every test whose `policy::name` contains `filter`. `default_now` is the instant
/// each test starts at, until it calls `at(…)`.
pub(crate) fn run(store: &Store, filter: Option<&str>, default_now: Time) -> Result<Outcome, Error> {
    let instant = Instant::new(default_now);
    let config = ConfigOverride::default();
    let coverage = Coverage::default();
    let (set, problems) =
        PolicySet::compile_for_tests(&store.policy_files, &store.settings, &instant, &config, &coverage);
    if !problems.is_empty() {
        return Err(Error::Invalid(problems));
    }
    let set = Arc::new(set);
    let mut out = Outcome::default();
    for file in &store.policy_tests {
        let Some(idx) = tested_policy(&file.path).and_then(|name| set.index_of(name)) else {
            out.broken.push(orphan_test(file, &store.settings.policies_dir));
            continue;
        };
        let env = TestEnv {
            instant: instant.clone(),
            config: config.clone(),
            default_now,
        };
        match run_file(&set, idx, file, &env, filter) {
            Ok(results) => out.tests.extend(results),
            Err(p) => out.broken.push(p),
        }
    }
    for policy in set.policies() {
        // With a filter, only the policies whose tests ran: the others were not tried.
        if filter.is_some() && !out.tests.iter().any(|t| t.policy == policy.name) {
            continue;
        }
        out.coverage.push(coverage::Report::new(
            &policy.name,
            &policy.path,
            &coverage::statement_lines(&policy.ast),
            &coverage.hits(&policy.path),
        ));
    }
    Ok(out)
}

/// A test file whose policy does not exist.
pub(crate) fn orphan_test(file: &FileEntry, policies_dir: &str) -> Problem {
    let name = tested_policy(&file.path).unwrap_or_default();
    Problem::new(
        &file.path,
        format!("tests policy {name}, which does not exist (no {policies_dir}/{name}.rhai)"),
    )
}

/// What a test can change, reset before each test.
struct TestEnv {
    instant: Instant,
    config: ConfigOverride,
    default_now: Time,
}

impl TestEnv {
    fn reset(&self) {
        self.instant.set(self.default_now);
        self.config.set(None);
    }
}

fn run_file(
    set: &Arc<PolicySet>,
    idx: usize,
    file: &FileEntry,
    env: &TestEnv,
    filter: Option<&str>,
) -> Result<Vec<TestResult>, Problem> {
    let policy = set.policies()[idx].name.clone();
    let engine = test_engine(set.clone(), idx, env);
    env.reset();
    let text = std::str::from_utf8(&file.bytes)
        .map_err(|_| Problem::new(&file.path, "file is not valid UTF-8 text"))?;
    let mut ast = engine
        .compile(text)
        .map_err(|e| super::parse_problem(&file.path, &e))?;
    ast.set_source(file.path.as_str());
    let mut globals = Scope::new();
    engine.run_ast_with_scope(&mut globals, &ast).map_err(|e| {
        let (msg, pos) = describe(&e);
        Problem::at(&file.path, pos, format!("top level: {msg}"))
    })?;
    let tests: Vec<_> = ast
        .iter_functions()
        .filter(|f| f.name.starts_with("test_"))
        .collect();
    // A test that can never run is a mistake, not a pass.
    if let Some(f) = tests.iter().find(|f| !f.params.is_empty()) {
        return Err(Problem::new(
            &file.path,
            format!(
                "fn {}({}) takes parameters; a test takes none",
                f.name,
                f.params.join(", ")
            ),
        ));
    }
    if tests.is_empty() {
        return Err(Problem::new(
            &file.path,
            "defines no `fn test_…()`: nothing to run (a test's name starts with test_)",
        ));
    }
    let mut names: Vec<String> = tests.iter().map(|f| f.name.to_string()).collect();
    names.sort();
    let mut results = Vec::new();
    for name in names {
        let mut result = TestResult {
            policy: policy.clone(),
            name,
            path: file.path.clone(),
            passed: true,
            failure: None,
        };
        if filter.is_some_and(|f| !result.full_name().contains(f)) {
            continue;
        }
        env.reset();
        let mut scope = globals.clone();
        let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        if let Err(e) = engine.call_fn_with_options::<Dynamic>(options, &mut scope, &ast, &result.name, ()) {
            let (msg, pos) = describe(&e);
            result.passed = false;
            result.failure = Some(match pos {
                Some((l, c)) => format!("{}:{l}:{c}: {msg}", file.path),
                None => format!("{}: {msg}", file.path),
            });
        }
        results.push(result);
    }
    Ok(results)
}

/// The sandboxed engine a test file runs in: the policy API plus the test helpers,
/// with `evaluate(k)` bound to policy `idx` of `set`.
fn test_engine(set: Arc<PolicySet>, idx: usize, env: &TestEnv) -> Engine {
    let instant = env.instant.clone();
    let mut engine = api::engine_with(&api::Clock::Settable(instant.clone()), Arc::new(Vec::new()));
    {
        let config = env.config.clone();
        engine.register_fn("with_config", move |map: Map| config.set(Some(map)));
    }
    {
        let instant = instant.clone();
        engine.register_fn("at", move |s: &str| -> RResult<()> {
            instant.set(Time::parse_rfc3339(s).map_err(rt_err)?);
            Ok(())
        });
    }
    {
        let instant = instant.clone();
        engine.register_fn("at", move |t: Time| instant.set(t));
    }
    {
        let instant = instant.clone();
        engine.register_fn("key", move |fields: Map| build_key(fields, instant.get()));
    }
    {
        let instant = instant.clone();
        engine.register_fn("key", move || build_key(Map::new(), instant.get()));
    }
    engine.register_fn("evaluate", move |k: KeyView| -> RResult<Array> {
        let view = k.at(instant.get());
        let decisions = set.evaluate_one(idx, &view).map_err(|e| rt_err(e.to_string()))?;
        Ok(decisions.into_iter().map(Dynamic::from).collect())
    });
    register_asserts(&mut engine);
    engine
}

/// The decisions a test asserts on: what `evaluate` returned, or one decision.
fn decision_list(what: &str, d: &Dynamic) -> RResult<Vec<Decision>> {
    if d.is_unit() {
        return Ok(Vec::new());
    }
    if let Some(one) = d.clone().try_cast::<Decision>() {
        return Ok(vec![one]);
    }
    if let Some(items) = d.clone().try_cast::<Array>() {
        return items
            .into_iter()
            .map(|i| {
                let type_name = i.type_name();
                i.try_cast::<Decision>().ok_or_else(|| {
                    rt_err(format!(
                        "{what}: expected the decisions evaluate returned, found {type_name} in the array"
                    ))
                })
            })
            .collect();
    }
    Err(rt_err(format!(
        "{what}: expected the decisions evaluate returned, not {}",
        d.type_name()
    )))
}

/// `no decision`, or `[rotate("…", grace 1d), restrict(["withdraw"], "…")]`.
fn show(decisions: &[Decision]) -> String {
    if decisions.is_empty() {
        return "no decision".into();
    }
    let items: Vec<String> = decisions
        .iter()
        .map(|d| match &d.verdict {
            Verdict::Rotate { grace: Some(g) } => format!("rotate({:?}, {g})", d.reason),
            Verdict::Restrict { remove } => format!("restrict({remove:?}, {:?})", d.reason),
            _ => format!("{}({:?})", d.kind_name(), d.reason),
        })
        .collect();
    format!("[{}]", items.join(", "))
}

fn expect(what: &str, d: &Dynamic, wanted: &str, ok: impl Fn(&Decision) -> bool) -> RResult<()> {
    let list = decision_list(what, d)?;
    if list.iter().any(ok) {
        Ok(())
    } else {
        Err(rt_err(format!("{what}: expected {wanted}, got {}", show(&list))))
    }
}

fn string_set(what: &str, items: Array) -> RResult<BTreeSet<String>> {
    items
        .into_iter()
        .map(|p| {
            let type_name = p.type_name();
            p.into_immutable_string()
                .map(|s| s.to_string())
                .map_err(|_| rt_err(format!("{what}: permissions must be strings, not {type_name}")))
        })
        .collect()
}

/// `d` holds a restrict removing exactly `want`.
fn assert_restrict(d: &Dynamic, want: BTreeSet<String>) -> RResult<()> {
    expect(
        "assert_restrict",
        d,
        &format!("a restrict of {want:?}"),
        |x| match &x.verdict {
            Verdict::Restrict { remove } => remove.iter().cloned().collect::<BTreeSet<_>>() == want,
            _ => false,
        },
    )
}

fn register_asserts(engine: &mut Engine) {
    engine
        .register_fn("assert_rotate", |d: Dynamic| {
            expect("assert_rotate", &d, "a rotate", |x| {
                matches!(x.verdict, Verdict::Rotate { .. })
            })
        })
        .register_fn("assert_rotate", |d: Dynamic, grace: Dur| {
            expect(
                "assert_rotate",
                &d,
                &format!("a rotate with grace {grace}"),
                |x| x.verdict == Verdict::Rotate { grace: Some(grace) },
            )
        })
        .register_fn("assert_revoke", |d: Dynamic| {
            expect("assert_revoke", &d, "a revoke", |x| x.verdict == Verdict::Revoke)
        })
        .register_fn("assert_warn", |d: Dynamic| {
            expect("assert_warn", &d, "a warn", |x| x.verdict == Verdict::Warn)
        })
        .register_fn("assert_restrict", |d: Dynamic, perms: Array| -> RResult<()> {
            assert_restrict(&d, string_set("assert_restrict", perms)?)
        })
        .register_fn("assert_restrict", |d: Dynamic, perm: &str| {
            assert_restrict(&d, BTreeSet::from([perm.to_string()]))
        })
        .register_fn("assert_none", |d: Dynamic| -> RResult<()> {
            let list = decision_list("assert_none", &d)?;
            if list.is_empty() {
                Ok(())
            } else {
                Err(rt_err(format!(
                    "assert_none: expected no decision, got {}",
                    show(&list)
                )))
            }
        })
        .register_fn(
            "assert_eq",
            |ctx: NativeCallContext, got: Dynamic, want: Dynamic| -> RResult<()> {
                let same = got.type_id() == want.type_id()
                    && ctx
                        .call_native_fn::<bool>("==", (got.clone(), want.clone()))
                        .unwrap_or(false);
                if same {
                    Ok(())
                } else {
                    Err(rt_err(format!("assert_eq: expected {want:?}, got {got:?}")))
                }
            },
        )
        .register_fn("assert", |cond: bool| -> RResult<()> {
            if cond {
                Ok(())
            } else {
                Err(rt_err("assert: the condition is false"))
            }
        })
        .register_fn("assert", |cond: bool, message: &str| -> RResult<()> {
            if cond {
                Ok(())
            } else {
                Err(rt_err(format!("assert: {message}")))
            }
        });
}

/// The fields `key(#{…})` accepts, and what each defaults to.
pub(crate) const KEY_FIELDS: &[(&str, &str)] = &[
    ("id", "\"test-key\""),
    (
        "folder",
        "\"\" (the keys folder itself; or \"trading\", \"trading/bots\")",
    ),
    ("service", "\"test\""),
    ("owner", "\"alice\""),
    ("owner_status", "\"active\" (or \"departed\", \"unknown\")"),
    ("owner_team", "()"),
    ("owner_departed_at", "() (or a time, for a departed owner)"),
    ("owner_key_count", "1"),
    ("environment", "\"production\""),
    ("permissions", "[]"),
    ("ip_allowlist", "[]"),
    ("tags", "[]"),
    ("compromised", "false"),
    ("status", "\"active\""),
    ("created_at", "rotated_at if given, else the current instant"),
    ("rotated_at", "created_at"),
    ("last_used_at", "() (never used)"),
    ("last_used_from", "[]"),
    ("age", "sets rotated_at to now - age"),
    ("idle", "sets last_used_at to now - idle"),
];

/// `key(#{ permissions: ["withdraw"], rotated_at: "2026-01-01T00:00:00Z" })`: a key with
/// every field not given at its default. An unknown field is an error, as a misspelt
/// one in a key file is.
fn build_key(mut fields: Map, now: Time) -> RResult<KeyView> {
    let mut take = |name: &str| fields.remove(name);
    let string = |name: &str, v: Option<Dynamic>, default: &str| -> RResult<String> {
        match v {
            None => Ok(default.to_string()),
            Some(v) => {
                let type_name = v.type_name();
                v.into_immutable_string()
                    .map(|s| s.to_string())
                    .map_err(|_| rt_err(format!("key: {name} must be a string, not {type_name}")))
            }
        }
    };
    let strings = |name: &str, v: Option<Dynamic>| -> RResult<Vec<String>> {
        match v {
            None => Ok(Vec::new()),
            Some(v) => {
                let type_name = v.type_name();
                let items = v.try_cast::<Array>().ok_or_else(|| {
                    rt_err(format!(
                        "key: {name} must be an array of strings, not {type_name}"
                    ))
                })?;
                Ok(string_set(&format!("key: {name}"), items)?.into_iter().collect())
            }
        }
    };
    let time = |name: &str, v: Option<Dynamic>| -> RResult<Option<Time>> {
        match v {
            None => Ok(None),
            Some(v) if v.is_unit() => Ok(None),
            Some(v) if v.is::<Time>() => Ok(Some(v.cast::<Time>())),
            Some(v) => {
                let type_name = v.type_name();
                let s = v.into_immutable_string().map_err(|_| {
                    rt_err(format!(
                        "key: {name} must be a time or an RFC 3339 string, not {type_name}"
                    ))
                })?;
                Time::parse_rfc3339(&s)
                    .map(Some)
                    .map_err(|e| rt_err(format!("key: {name}: {e}")))
            }
        }
    };
    let duration = |name: &str, v: Option<Dynamic>| -> RResult<Option<Dur>> {
        match v {
            None => Ok(None),
            Some(v) => {
                let type_name = v.type_name();
                v.try_cast::<Dur>().map(Some).ok_or_else(|| {
                    rt_err(format!(
                        "key: {name} must be a duration such as days(100), not {type_name}"
                    ))
                })
            }
        }
    };
    let boolean = |name: &str, v: Option<Dynamic>| -> RResult<bool> {
        match v {
            None => Ok(false),
            Some(v) => v
                .as_bool()
                .map_err(|t| rt_err(format!("key: {name} must be true or false, not {t}"))),
        }
    };

    let id = string("id", take("id"), "test-key")?;
    let folder = string("folder", take("folder"), "")?;
    let service = string("service", take("service"), "test")?;
    let owner = string("owner", take("owner"), "alice")?;
    let owner_status = match string("owner_status", take("owner_status"), "active")?.as_str() {
        "active" => "active",
        "departed" => "departed",
        "unknown" => "unknown",
        other => {
            return Err(rt_err(format!(
                "key: owner_status must be \"active\", \"departed\" or \"unknown\", not {other:?}"
            )))
        }
    };
    let owner_team = match take("owner_team") {
        None => None,
        Some(v) if v.is_unit() => None,
        v => Some(string("owner_team", v, "")?),
    };
    let owner_departed_at = time("owner_departed_at", take("owner_departed_at"))?;
    let owner_key_count = match take("owner_key_count") {
        None => 1,
        Some(v) => v
            .as_int()
            .map_err(|t| rt_err(format!("key: owner_key_count must be an integer, not {t}")))?,
    };
    let environment = string("environment", take("environment"), "production")?;
    let permissions = strings("permissions", take("permissions"))?;
    let ip_allowlist = strings("ip_allowlist", take("ip_allowlist"))?;
    let last_used_from = strings("last_used_from", take("last_used_from"))?;
    let tags = strings("tags", take("tags"))?;
    let compromised = boolean("compromised", take("compromised"))?;
    let status = match string("status", take("status"), "active")?.as_str() {
        "active" => KeyStatus::Active,
        "revoked" => KeyStatus::Revoked,
        other => {
            return Err(rt_err(format!(
                "key: status must be \"active\" or \"revoked\", not {other:?}"
            )))
        }
    };
    let age = duration("age", take("age"))?;
    let idle = duration("idle", take("idle"))?;
    let mut rotated_at = time("rotated_at", take("rotated_at"))?;
    let mut last_used_at = time("last_used_at", take("last_used_at"))?;
    let created_given = time("created_at", take("created_at"))?;
    if let Some(age) = age {
        if rotated_at.is_some() {
            return Err(rt_err("key: give age or rotated_at, not both"));
        }
        rotated_at = Some(
            now.checked_sub(age)
                .ok_or_else(|| rt_err("key: age is out of range"))?,
        );
    }
    if let Some(idle) = idle {
        if last_used_at.is_some() {
            return Err(rt_err("key: give idle or last_used_at, not both"));
        }
        last_used_at = Some(
            now.checked_sub(idle)
                .ok_or_else(|| rt_err("key: idle is out of range"))?,
        );
    }
    let created_at = created_given.or(rotated_at).unwrap_or(now);
    let rotated_at = rotated_at.unwrap_or(created_at);
    if let Some(unknown) = fields.keys().next() {
        let known: Vec<&str> = KEY_FIELDS.iter().map(|(f, _)| *f).collect();
        return Err(rt_err(format!(
            "key: unknown field `{unknown}`; the fields are {}",
            known.join(", ")
        )));
    }
    if !crate::store::key::is_valid_id(&id) {
        return Err(rt_err(format!("key: `{id}` is not a valid key id")));
    }
    if !folder.is_empty() && !folder.split('/').all(crate::store::layout::is_valid_folder_name) {
        return Err(rt_err(format!(
            "key: folder `{folder}` is not a valid folder (names such as \"trading\" or \"trading/bots\")"
        )));
    }
    let key = Key {
        path: match folder.as_str() {
            "" => format!("keys/{id}.toml"),
            folder => format!("keys/{folder}/{id}.toml"),
        },
        folder,
        id,
        service,
        owner,
        environment,
        permissions,
        ip_allowlist,
        created_at,
        rotated_at,
        last_used_at,
        last_used_from,
        compromised,
        status,
        fingerprint: None,
        tags,
        previous: Vec::new(),
        revoked_at: None,
        revoke_reason: None,
    };
    let owner = crate::policy::api::OwnerFacts {
        status: owner_status,
        team: owner_team,
        departed_at: owner_departed_at,
        key_count: owner_key_count as INT,
    };
    Ok(KeyView::from_parts(Arc::new(key), owner, now))
}
