use std::collections::HashMap;

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn unknown_key_is_an_error_naming_key_and_line() {
    let err = parse_file(
        "listen = \"127.0.0.1:1\"\nheartbeat_sec = 3\n",
        "/etc/t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("/etc/t.toml"), "{err}");
    assert!(err.contains("heartbeat_sec"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn wrong_type_is_an_error() {
    let err = parse_file("max_connections = \"lots\"\n", "t")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_connections") || err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn defaults() {
    let c = resolve(
        &Overrides::default(),
        &env_of(&[("STATE_DIRECTORY", "/var/lib/mt")]),
        None,
    )
    .unwrap();
    assert_eq!(
        c.listen.to_string(),
        minitorr_proto::defaults::DEFAULT_TRACKER_ADDR
    );
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/mt"));
    assert_eq!(c.database_url, "sqlite:///var/lib/mt/tracker.db?mode=rwc");
    assert_eq!(c.log_level, "info");
    assert_eq!(
        (
            c.max_connections,
            c.heartbeat_secs,
            c.peer_timeout_secs,
            c.session_ttl_secs
        ),
        (4096, 5, 15, 604_800)
    );
    assert_eq!(
        (
            c.ticket_ttl_secs,
            c.handshake_timeout_secs,
            c.idle_timeout_secs
        ),
        (3600, 5, 120)
    );
    assert_eq!(
        (
            c.max_frame_before_login,
            c.max_unauthenticated,
            c.max_unauthenticated_per_source,
            c.max_unauthenticated_bytes
        ),
        (4096, 1024, 64, 4 << 20)
    );
    let c = resolve(&Overrides::default(), &no_env, None).unwrap();
    assert!(
        c.state_dir.ends_with("minitorr/tracker"),
        "{}",
        c.state_dir.display()
    );
}

#[test]
fn precedence_flag_over_env_over_file_over_default() {
    let file = parse_file(
        "listen = \"127.0.0.1:1001\"\nstate_dir = \"/f\"\ndatabase_url = \"sqlite:///f.db\"\nheartbeat_secs = 2\n",
        "t",
    )
    .unwrap();
    let env = env_of(&[
        ("TRACKERD_LISTEN", "127.0.0.1:1002"),
        ("TRACKERD_STATE_DIR", "/e"),
    ]);
    let cli = Overrides {
        listen: Some("127.0.0.1:1003".parse().unwrap()),
        ..Default::default()
    };

    let c = resolve(&cli, &env, Some(file.clone())).unwrap();
    assert_eq!(c.listen.port(), 1003, "flag beats env");
    assert_eq!(c.state_dir, PathBuf::from("/e"), "env beats file");
    assert_eq!(c.database_url, "sqlite:///f.db", "file beats default");
    assert_eq!(c.heartbeat_secs, 2);

    let c = resolve(&Overrides::default(), &env, Some(file.clone())).unwrap();
    assert_eq!(c.listen.port(), 1002, "env beats file");
    let c = resolve(&Overrides::default(), &no_env, Some(file)).unwrap();
    assert_eq!(c.listen.port(), 1001);
    assert_eq!(c.state_dir, PathBuf::from("/f"));

    // The database follows the state dir unless set itself.
    let cli = Overrides {
        state_dir: Some("/s".into()),
        ..Default::default()
    };
    let c = resolve(&cli, &env_of(&[("TRACKERD_STATE_DIR", "/e")]), None).unwrap();
    assert_eq!(c.database_url, "sqlite:///s/tracker.db?mode=rwc");
    assert_eq!(
        c.signing_key_file,
        PathBuf::from("/s/ticket-signing.key"),
        "the key file follows the state dir"
    );
    assert_eq!(c.key_overlap_secs, c.ticket_ttl_secs + 300);
    let c = resolve(
        &cli,
        &env_of(&[("TRACKERD_DATABASE_URL", "postgres://db/t")]),
        None,
    )
    .unwrap();
    assert_eq!(c.database_url, "postgres://db/t");
}

#[test]
fn bad_env_value_is_reported() {
    let err = resolve(
        &Overrides::default(),
        &env_of(&[("TRACKERD_LISTEN", "nope")]),
        None,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "TRACKERD_LISTEN: 'nope' is not a valid socket address"
    );
}

#[test]
fn tracker_info_form_picks_entry_n() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tracker_info.txt");
    std::fs::write(&p, "127.0.0.1\n5000\n127.0.0.1\n6000\n").unwrap();
    let mut cli = Overrides {
        tracker_info: Some(p.clone()),
        ..Default::default()
    };
    let env = env_of(&[("TRACKERD_LISTEN", "127.0.0.1:9")]);
    assert_eq!(
        resolve(&cli, &env, None).unwrap().listen.port(),
        5000,
        "entry 1 by default, beats env"
    );
    cli.tracker_no = Some(2);
    assert_eq!(resolve(&cli, &no_env, None).unwrap().listen.port(), 6000);
    cli.tracker_no = Some(3);
    let err = resolve(&cli, &no_env, None).unwrap_err().to_string();
    assert!(
        err.contains("lists 2 tracker(s), there is no number 3"),
        "{err}"
    );
    cli.tracker_no = Some(0);
    assert!(resolve(&cli, &no_env, None).is_err());
    cli.tracker_no = None;
    cli.listen = Some("127.0.0.1:1".parse().unwrap());
    assert!(
        resolve(&cli, &no_env, None).is_err(),
        "--listen and TRACKER_INFO conflict"
    );
}

#[test]
fn config_path_rules() {
    let cli = Overrides {
        config: Some("/x.toml".into()),
        ..Default::default()
    };
    let env = env_of(&[
        ("TRACKERD_CONFIG", "/e.toml"),
        ("CONFIGURATION_DIRECTORY", "/etc/minitorr"),
    ]);
    assert_eq!(config_path(&cli, &env), Some(("/x.toml".into(), true)));
    assert_eq!(
        config_path(&Overrides::default(), &env),
        Some(("/e.toml".into(), true))
    );
    let env = env_of(&[("CONFIGURATION_DIRECTORY", "/etc/minitorr:/other")]);
    assert_eq!(
        config_path(&Overrides::default(), &env),
        Some(("/etc/minitorr/trackerd.toml".into(), false))
    );
    assert_eq!(config_path(&Overrides::default(), &no_env), None);
}

#[test]
fn missing_file_is_an_error_only_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("absent.toml");
    assert!(load_file(&p, false).unwrap().is_none());
    let err = load_file(&p, true).unwrap_err().to_string();
    assert!(err.contains("absent.toml"), "{err}");
}

#[test]
fn invalid_values_are_refused() {
    let file = parse_file("heartbeat_secs = 10\npeer_timeout_secs = 10\n", "t").unwrap();
    let err = resolve(&Overrides::default(), &no_env, Some(file))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("peer_timeout_secs (10) must be greater than heartbeat_secs (10)"),
        "{err}"
    );
    let file = parse_file("max_connections = 0\n", "t").unwrap();
    assert!(resolve(&Overrides::default(), &no_env, Some(file)).is_err());
    let file = parse_file("log_level = \"info,=[\"\n", "t").unwrap();
    assert!(resolve(&Overrides::default(), &no_env, Some(file)).is_err());
}

#[test]
fn printed_config_parses_back_to_the_same() {
    let c = resolve(
        &Overrides::default(),
        &env_of(&[("STATE_DIRECTORY", "/s")]),
        None,
    )
    .unwrap();
    let text = c.to_toml();
    assert!(text.contains("listen = \"127.0.0.1:5000\""), "{text}");
    let back = parse_file(&text, "printed").unwrap();
    assert_eq!(
        resolve(&Overrides::default(), &no_env, Some(back)).unwrap(),
        c
    );
}

#[test]
fn example_config_documents_every_key_and_is_all_defaults() {
    let text = include_str!("../../contrib/trackerd.toml");
    // Uncommenting every `# key = value` line must give a valid file equal to the defaults.
    let uncommented: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
        .map(|l| format!("{l}\n"))
        .collect();
    let file = parse_file(&uncommented, "contrib/trackerd.toml").unwrap();
    for key in [
        "listen",
        "state_dir",
        "database_url",
        "log_level",
        "max_connections",
        "heartbeat_secs",
        "peer_timeout_secs",
        "session_ttl_secs",
        "ticket_ttl_secs",
        "handshake_timeout_secs",
        "idle_timeout_secs",
        "max_frame_before_login",
        "max_unauthenticated",
        "max_unauthenticated_per_source",
        "max_unauthenticated_bytes",
        "quota_files_per_group",
        "quota_files",
        "quota_bytes",
        "quota_pieces",
        "max_pieces_per_file",
        "trust_announced_peer_addr",
        "allow_plaintext",
    ] {
        assert!(
            uncommented.contains(&format!("{key} = ")),
            "contrib/trackerd.toml lacks {key}"
        );
    }
    let c = resolve(&Overrides::default(), &no_env, Some(file)).unwrap();
    assert_eq!(
        c.listen.to_string(),
        minitorr_proto::defaults::DEFAULT_TRACKER_ADDR
    );
    assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(c.session_ttl_secs, DEFAULT_SESSION_TTL_SECS);
    assert!(!c.allow_plaintext && c.tls_cert.is_none());
    assert_eq!(c.metrics_listen, None, "metrics are off by default");
    for key in ["tls_cert", "tls_key", "metrics_listen"] {
        assert!(
            text.contains(&format!("#{key} = ")),
            "contrib/trackerd.toml lacks {key}"
        );
    }
}

#[test]
fn tls_settings_flag_beats_env_beats_file_and_go_in_pairs() {
    let file = parse_file(
        "tls_cert = \"/f/c.pem\"\ntls_key = \"/f/k.pem\"\nallow_plaintext = true\n",
        "t",
    )
    .unwrap();
    let c = resolve(&Overrides::default(), &no_env, Some(file.clone())).unwrap();
    assert_eq!(c.tls_cert, Some(PathBuf::from("/f/c.pem")));
    assert!(c.allow_plaintext);
    let env = env_of(&[
        ("TRACKERD_TLS_CERT", "/e/c.pem"),
        ("TRACKERD_ALLOW_PLAINTEXT", "false"),
    ]);
    let c = resolve(&Overrides::default(), &env, Some(file.clone())).unwrap();
    assert_eq!(c.tls_cert, Some(PathBuf::from("/e/c.pem")));
    assert_eq!(c.tls_key, Some(PathBuf::from("/f/k.pem")));
    assert!(!c.allow_plaintext, "env beats file");
    let cli = Overrides {
        tls_key: Some("/c/k.pem".into()),
        allow_plaintext: true,
        ..Default::default()
    };
    let c = resolve(&cli, &env, Some(file)).unwrap();
    assert_eq!(c.tls_key, Some(PathBuf::from("/c/k.pem")));
    assert!(c.allow_plaintext, "flag beats env");

    let only_cert = parse_file("tls_cert = \"/f/c.pem\"\n", "t").unwrap();
    let e = resolve(&Overrides::default(), &no_env, Some(only_cert))
        .unwrap_err()
        .to_string();
    assert!(e.contains("tls_cert and tls_key"), "{e}");
    let e = resolve(
        &Overrides::default(),
        &env_of(&[("TRACKERD_ALLOW_PLAINTEXT", "maybe")]),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("TRACKERD_ALLOW_PLAINTEXT"), "{e}");
}

#[test]
fn key_file_precedence_and_overlap_floor() {
    let file = parse_file(
        "signing_key_file = \"/f.key\"\nticket_ttl_secs = 60\nkey_overlap_secs = 60\n",
        "t",
    )
    .unwrap();
    let env = env_of(&[("TRACKERD_SIGNING_KEY_FILE", "/e.key")]);
    let c = resolve(&Overrides::default(), &env, Some(file.clone())).unwrap();
    assert_eq!(
        c.signing_key_file,
        PathBuf::from("/e.key"),
        "env beats file"
    );
    assert_eq!(c.key_overlap_secs, 60);
    let cli = Overrides {
        signing_key_file: Some("/c.key".into()),
        ..Default::default()
    };
    let c = resolve(&cli, &env, Some(file)).unwrap();
    assert_eq!(
        c.signing_key_file,
        PathBuf::from("/c.key"),
        "flag beats env"
    );

    let short = parse_file("ticket_ttl_secs = 60\nkey_overlap_secs = 59\n", "t").unwrap();
    let e = resolve(&Overrides::default(), &env_of(&[]), Some(short))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("key_overlap_secs (59) must be at least ticket_ttl_secs (60)"),
        "{e}"
    );
}

#[test]
fn pre_login_limits_are_checked() {
    let bad = |text: &str| {
        let file = parse_file(text, "t").unwrap();
        resolve(&Overrides::default(), &no_env, Some(file))
            .unwrap_err()
            .to_string()
    };
    assert!(bad("max_frame_before_login = 100").contains("a login must fit"));
    assert!(bad("max_frame_before_login = 999999999").contains("must be between"));
    assert!(bad("max_unauthenticated = 0").contains("at least 1"));
    assert!(bad("max_unauthenticated_per_source = 0").contains("at least 1"));
    assert!(
        bad("max_frame_before_login = 8192\nmax_unauthenticated_bytes = 4096")
            .contains("at least max_frame_before_login")
    );
    let file = parse_file(
        "max_frame_before_login = 8192\nmax_unauthenticated = 10\nmax_unauthenticated_per_source = 2\nmax_unauthenticated_bytes = 65536\n",
        "t",
    )
    .unwrap();
    let c = resolve(&Overrides::default(), &no_env, Some(file)).unwrap();
    let o = crate::server::ServerOptions::from_config(&c);
    assert_eq!(o.max_frame_before_login, 8192);
    assert_eq!(
        o.unauthenticated,
        crate::preauth::Limits {
            max_total: 10,
            max_per_source: 2,
            max_bytes: 65536
        }
    );
}

#[test]
fn quotas_come_from_the_file_and_must_be_positive() {
    let file = parse_file(
        "quota_files_per_group = 3\nmax_pieces_per_file = 99\ntrust_announced_peer_addr = true\n",
        "t",
    )
    .unwrap();
    let c = resolve(&Overrides::default(), &no_env, Some(file)).unwrap();
    let p = c.policy();
    assert_eq!(p.quota.files_per_group, 3);
    assert_eq!(p.quota.files, DEFAULT_QUOTA_FILES);
    assert_eq!(p.max_pieces_per_file, 99);
    assert!(p.trust_announced_peer_addr);
    let zero = parse_file("quota_bytes = 0\n", "t").unwrap();
    let e = resolve(&Overrides::default(), &no_env, Some(zero)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid configuration: quota_bytes must be at least 1"
    );
}

#[test]
fn metrics_listen_is_an_address_and_off_by_default() {
    let c = resolve(&Overrides::default(), &no_env, None).unwrap();
    assert_eq!(c.metrics_listen, None);
    assert!(!c.to_toml().contains("metrics_listen"));
    let file = parse_file("metrics_listen = \"127.0.0.1:9100\"\n", "t").unwrap();
    let c = resolve(&Overrides::default(), &no_env, Some(file)).unwrap();
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
    assert!(c.to_toml().contains("metrics_listen = \"127.0.0.1:9100\""));
    let e = parse_file("metrics_listen = \"localhost\"\n", "t").unwrap_err();
    assert!(e.to_string().contains("metrics_listen"), "{e}");
}
