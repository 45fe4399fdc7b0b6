//! The built-in PostgreSQL provider: a key's secret is the password of a database role.
//!
//! - Without a grace period (`grace_period = "0s"`), the single-user strategy: `set`
//!   replaces the password of the role itself; the old one stops at once. The secret
//!   is the password.
//! - With a grace period, the alternating-users strategy (as AWS Secrets Manager does
//!   for databases): two login roles `<role>_a` and `<role>_b`, members of `<role>`
//!   (so they hold its privileges). A rotation sets the password of the one not in
//!   use; the other keeps working until keyrot expires its secret, which disables its
//!   login. The secret is `<login role>:<password>`, so an application knows which
//!   user to connect as.
//!
//! Passwords reach the server only as SCRAM-SHA-256 verifiers, never in plain text, so
//! they are in no statement log. Each role carries a comment `keyrot <fingerprint>`
//! saying which secret it holds. `test` logs in with the new secret; `revoke` disables
//! login and clears the passwords of every role of the key. `restrict` is not
//! supported: privileges are the database's business (`GRANT`/`REVOKE`).

use std::str::FromStr;
use std::time::Duration;

use super::{Provider, Request, Response, Step, StepError};
use crate::secret::Secret;

pub(crate) struct Pg {
    /// The environment variable with the admin connection string.
    pub dsn_env: String,
    /// The role, with `{id}` and `{service}` not yet expanded.
    pub role: String,
    pub secret_prefix: String,
    pub secret_bytes: usize,
    pub timeout: Duration,
}

fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn comment_for(fingerprint: &str) -> String {
    format!("keyrot {fingerprint}")
}

impl Pg {
    fn fail(&self, step: Step, what: impl std::fmt::Display) -> StepError {
        StepError::new(format!("provider postgres ({}): {what}", step.as_str()))
    }

    fn config(&self, step: Step) -> Result<postgres::Config, StepError> {
        let dsn = std::env::var(&self.dsn_env).unwrap_or_default();
        if dsn.trim().is_empty() {
            return Err(self.fail(
                step,
                format!(
                    "${} is not set: it must hold the admin connection string",
                    self.dsn_env
                ),
            ));
        }
        let mut config = postgres::Config::from_str(&dsn).map_err(|_| {
            self.fail(
                step,
                format!("${} is not a valid connection string", self.dsn_env),
            )
        })?;
        config.connect_timeout(self.timeout);
        Ok(config)
    }

    fn admin(&self, step: Step) -> Result<postgres::Client, StepError> {
        self.config(step)?
            .connect(postgres::NoTls)
            .map_err(|e| self.fail(step, format!("cannot connect as admin: {}", db_error(&e))))
    }

    fn role(&self, req: &Request) -> String {
        self.role
            .replace("{id}", &req.key.id)
            .replace("{service}", &req.key.service)
    }

    /// The key's login roles that exist, with the fingerprint each holds.
    fn roles(
        &self,
        db: &mut postgres::Client,
        base: &str,
        step: Step,
    ) -> Result<Vec<(String, Option<String>)>, StepError> {
        let names = [base.to_string(), format!("{base}_a"), format!("{base}_b")];
        let rows = db
            .query(
                "SELECT rolname::text, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = ANY($1)",
                &[&names.to_vec()],
            )
            .map_err(|e| self.fail(step, db_error(&e)))?;
        Ok(rows
            .iter()
            .map(|r| {
                let comment: Option<String> = r.get(1);
                let fp = comment.and_then(|c| c.strip_prefix("keyrot ").map(str::to_string));
                (r.get::<_, String>(0), fp)
            })
            .collect())
    }

    fn exec(&self, db: &mut postgres::Client, step: Step, sql: &str) -> Result<(), StepError> {
        db.batch_execute(sql).map_err(|e| self.fail(step, db_error(&e)))
    }

    /// Disables a role's login and clears its password and comment.
    fn disable(&self, db: &mut postgres::Client, step: Step, role: &str) -> Result<(), StepError> {
        self.exec(
            db,
            step,
            &format!(
                "ALTER ROLE {r} WITH NOLOGIN PASSWORD NULL; COMMENT ON ROLE {r} IS NULL;",
                r = ident(role)
            ),
        )
    }

    /// `(user, password)` of a secret: `user:password` for alternating users.
    fn split<'s>(&self, base: &str, secret: &'s Secret) -> (String, &'s str) {
        let text = secret.expose();
        for suffix in ["_a", "_b"] {
            let user = format!("{base}{suffix}");
            if let Some(pw) = text.strip_prefix(&format!("{user}:")) {
                return (user, pw);
            }
        }
        (base.to_string(), text)
    }
}

/// A database error's own message (not the driver's wrapper, which says little).
fn db_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

impl Provider for Pg {
    fn call(&self, req: &Request) -> Result<Response, StepError> {
        let step = req.step;
        let base = self.role(req);
        match step {
            Step::Create => {
                let alternating = req.grace.is_some_and(|g| g.secs() > 0);
                if !alternating {
                    return Ok(Response::default());
                }
                let mut db = self.admin(step)?;
                let roles = self.roles(&mut db, &base, step)?;
                let holds = |suffix: &str| {
                    roles.iter().any(|(r, fp)| {
                        *r == format!("{base}{suffix}") && fp.is_some() && *fp == req.key.fingerprint
                    })
                };
                // The role not holding the current secret gets the new one.
                let user = if holds("_a") { format!("{base}_b") } else { format!("{base}_a") };
                let password = Secret::generate(&self.secret_prefix, &req.key.service, self.secret_bytes)
                    .map_err(|e| self.fail(step, e))?;
                let secret = Secret::from_service(format!("{user}:{}", password.expose()))
                    .map_err(|e| self.fail(step, e))?;
                Ok(Response { secret: Some(secret) })
            }
            Step::Set => {
                let secret = req.secret.ok_or_else(|| self.fail(step, "no secret given"))?;
                let (user, password) = self.split(&base, secret);
                let mut db = self.admin(step)?;
                let roles = self.roles(&mut db, &base, step)?;
                let exists = roles.iter().any(|(r, _)| *r == user);
                // Moving to alternating users: the role itself holds the current secret
                // (set before keyrot managed it); mark it so, so that expiring that
                // secret disables its login.
                let unmarked_base = roles.iter().any(|(r, fp)| *r == base && fp.is_none());
                if user != base && unmarked_base {
                    if let Some(current) = &req.key.fingerprint {
                        self.exec(
                            &mut db,
                            step,
                            &format!("COMMENT ON ROLE {} IS {};", ident(&base), literal(&comment_for(current))),
                        )?;
                    }
                }
                if !exists {
                    if user == base {
                        return Err(self.fail(step, format!("role {base} does not exist")));
                    }
                    // A login role that holds the key's role's privileges.
                    self.exec(&mut db, step, &format!("CREATE ROLE {} IN ROLE {}", ident(&user), ident(&base)))?;
                }
                let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
                let fp = secret.fingerprint();
                self.exec(
                    &mut db,
                    step,
                    &format!(
                        "ALTER ROLE {r} WITH LOGIN PASSWORD {v}; COMMENT ON ROLE {r} IS {c};",
                        r = ident(&user),
                        v = literal(&verifier),
                        c = literal(&comment_for(&fp))
                    ),
                )?;
                Ok(Response::default())
            }
            Step::Test => {
                let secret = req.secret.ok_or_else(|| self.fail(step, "no secret given"))?;
                let (user, password) = self.split(&base, secret);
                let mut config = self.config(step)?;
                config.user(&user).password(password);
                let mut db = config
                    .connect(postgres::NoTls)
                    .map_err(|e| self.fail(step, format!("cannot log in as {user} with the new secret: {}", db_error(&e))))?;
                db.simple_query("SELECT 1").map_err(|e| self.fail(step, db_error(&e)))?;
                Ok(Response::default())
            }
            Step::Finish => Ok(Response::default()),
            Step::Expire => {
                let fp = req.fingerprint.ok_or_else(|| self.fail(step, "no fingerprint given"))?;
                let mut db = self.admin(step)?;
                for (role, held) in self.roles(&mut db, &base, step)? {
                    if held.as_deref() == Some(fp) {
                        self.disable(&mut db, step, &role)?;
                    }
                }
                Ok(Response::default())
            }
            Step::Revoke => {
                let mut db = self.admin(step)?;
                let roles = self.roles(&mut db, &base, step)?;
                // With a secret or a fingerprint: take back that one secret (a rotation
                // rolled back). Without: the whole key.
                let targets: Vec<String> = match (req.secret, req.fingerprint) {
                    (Some(secret), _) => vec![self.split(&base, secret).0],
                    (None, Some(fp)) => roles
                        .iter()
                        .filter(|(_, held)| held.as_deref() == Some(fp))
                        .map(|(r, _)| r.clone())
                        .collect(),
                    (None, None) => roles.iter().map(|(r, _)| r.clone()).collect(),
                };
                let one_secret = req.secret.is_some() || req.fingerprint.is_some();
                if one_secret && targets.contains(&base) {
                    return Err(self.fail(
                        step,
                        format!("cannot restore the previous password of role {base}: the single-user strategy replaced it (give the rotation a grace period to use alternating users)"),
                    ));
                }
                for role in targets {
                    self.disable(&mut db, step, &role)?;
                }
                Ok(Response::default())
            }
            Step::Restrict => Err(self.fail(
                step,
                "the postgres provider does not restrict: grant and revoke the role's privileges in the database",
            )),
        }
    }
}
