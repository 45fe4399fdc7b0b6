use super::*;

#[test]
fn empty_file_gives_the_documented_defaults() {
    let (s, problems) = Settings::parse("keyrot.toml", "");
    assert!(problems.is_empty());
    assert_eq!(s, Settings::default());
    assert_eq!(s.grace_period, Dur::parse("24h").unwrap());
}

#[test]
fn the_policies_folder_cannot_be_inside_the_keys_folder() {
    let (s, problems) = Settings::parse("keyrot.toml", "[store]\npolicies = \"keys/policies\"\n");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].message.contains("must not be inside store.keys"));
    assert!(s.maintenance);
    let (s, problems) = Settings::parse(
        "keyrot.toml",
        "[store]\nkeys = \"inv/keys\"\nmaintenance = false\n",
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert!(!s.maintenance);
}

#[test]
fn unknown_fields_are_errors_with_positions() {
    let (_, problems) = Settings::parse("keyrot.toml", "[rotation]\ngrace_perod = \"1d\"\n");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].pos.map(|p| p.0), Some(2));
    assert!(
        problems[0].message.contains("grace_perod"),
        "{}",
        problems[0].message
    );
}

#[test]
fn every_bad_value_is_reported() {
    let text = "[store]\nkeys = \"../x\"\n[rotation]\ngrace_period = \"1x\"\nmin_interval = \"soon\"\n[secrets]\nbytes = 4\nprefix = \"KR\"\n";
    let (_, problems) = Settings::parse("keyrot.toml", text);
    let lines: Vec<usize> = problems.iter().filter_map(|p| p.pos.map(|p| p.0)).collect();
    assert_eq!(lines, vec![2, 4, 5, 7, 8], "{problems:?}");
}

#[test]
fn rollout_is_read_and_checked() {
    let text = "[rollout]\norder = [\"dev\", \"prod\"]\nsoak = \"12h\"\nmax_per_run = 5\n";
    let (s, problems) = Settings::parse("keyrot.toml", text);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(s.rollout.order, ["dev", "prod"]);
    assert_eq!(s.rollout.soak, Dur::parse("12h").unwrap());
    assert_eq!(s.rollout.max_per_run, Some(5));
    assert!(s.rollout.is_active());
    assert!(!Settings::default().rollout.is_active());

    let text = "[rollout]\norder = [\"dev\",\n  \"dev\"]\nsoak = \"-1h\"\nmax_per_run = 0\nlimit = 3\n";
    let (_, problems) = Settings::parse("keyrot.toml", text);
    assert_eq!(problems.len(), 1, "unknown field first: {problems:?}");
    assert!(problems[0].message.contains("limit"));
    let (_, problems) = Settings::parse("keyrot.toml", &text.replace("limit = 3\n", ""));
    let lines: Vec<usize> = problems.iter().filter_map(|p| p.pos.map(|p| p.0)).collect();
    assert_eq!(lines, vec![3, 4, 5], "{problems:?}");
    assert!(problems[0].message.contains("listed twice"), "{problems:?}");
}

#[test]
fn apply_and_service_limits_are_read_and_checked() {
    let text =
        "[apply]\nparallelism = 4\n[service.x]\nmax_concurrency = 2\nrate_limit = \"600/m\"\nretries = 3\n";
    let (s, problems) = Settings::parse("keyrot.toml", text);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(s.parallelism, 4);
    let x = &s.services["x"];
    assert_eq!(x.max_concurrency, Some(2));
    assert_eq!(
        x.rate_limit,
        Some(Rate {
            steps: 600,
            per: Dur::from_secs(60)
        })
    );
    assert_eq!(x.rate_limit.unwrap().to_string(), "600/m");
    assert_eq!(x.retries, 3);
    assert_eq!(Settings::default().parallelism, DEFAULT_PARALLELISM);

    let text =
        "[apply]\nparallelism = 0\n[service.x]\nmax_concurrency = 0\nrate_limit = \"fast\"\nretries = 11\n";
    let (_, problems) = Settings::parse("keyrot.toml", text);
    let lines: Vec<usize> = problems.iter().filter_map(|p| p.pos.map(|p| p.0)).collect();
    assert_eq!(lines, vec![2, 5, 4, 6], "{problems:?}");
    for bad in ["0/s", "10/d", "10", "x/s"] {
        assert!(Rate::parse(bad).is_err(), "{bad}");
    }
}

#[cfg(not(feature = "postgres"))]
#[test]
fn without_the_postgres_feature_the_postgres_provider_is_refused() {
    let text = "[service.db]\nprovider = \"postgres\"\n[service.db.postgres]\ndsn_env = \"DSN\"\n";
    let (_, problems) = Settings::parse("keyrot.toml", text);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0]
        .message
        .contains("built without the postgres provider"));
}

#[test]
fn policy_tables_become_config() {
    let (s, problems) = Settings::parse("keyrot.toml", "[policy.max-age]\nmax_days = 60\n");
    assert!(problems.is_empty());
    assert_eq!(s.policy_config["max-age"]["max_days"].as_integer(), Some(60));
}
