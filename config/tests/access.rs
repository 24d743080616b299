//! `access:` in dev.yaml and proxy.yaml: defaults, and problems named by key path, file and line.

use shoal_config::{ConfigError, DevConfig, ProxyConfig, RoleConfig, load_str};

fn no_env(_: &str) -> Option<String> {
    None
}

fn error<T: RoleConfig + std::fmt::Debug>(yaml: &str) -> String {
    match load_str::<T>(yaml, &no_env) {
        Ok(config) => panic!("expected an error, loaded {config:?}"),
        Err(e @ ConfigError::Invalid { .. }) => e.to_string(),
        Err(e) => panic!("expected problems, got {e}"),
    }
}

// `htpasswd -nbB -C 5 alice secret`.
const ALICE: &str = "alice:$2y$05$Xtrq2y0zEJWOmwy8wzj7eu9g0/NcSZVQ0KlcE9BJSiMs7ZnAQ9f0G\n";

#[test]
fn without_access_anyone_may_push() {
    let dev: DevConfig = load_str("{}", &no_env).unwrap();
    assert_eq!(dev.access.htpasswd, None);
    assert_eq!(dev.access.token.expiry.get().as_secs(), 300);
    assert_eq!(dev.access.max_failed_logins, 10);
    let proxy: ProxyConfig = load_str("{}", &no_env).unwrap();
    assert_eq!(proxy.access, dev.access);
}

#[test]
fn loads_a_full_block_in_both_roles() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, ALICE).unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let yaml = format!(
        "access:\n  htpasswd: {}\n  anonymous_pull: ['public/.*']\n  token:\n    service: reg\n    expiry: 10m\n    key_file: {}\n  max_failed_logins: 3\n",
        htpasswd.display(),
        key.display()
    );
    let dev: DevConfig = load_str(&yaml, &no_env).unwrap();
    assert_eq!(dev.access.htpasswd.as_deref(), Some(htpasswd.as_path()));
    assert!(dev.access.anonymous_pull[0].matches("public/app"));
    assert!(!dev.access.anonymous_pull[0].matches("private/app"));
    assert_eq!(dev.access.token.service, "reg");
    assert_eq!(dev.access.max_failed_logins, 3);
    let proxy: ProxyConfig = load_str(&yaml, &no_env).unwrap();
    assert_eq!(proxy.access, dev.access);
}

#[test]
fn a_missing_htpasswd_file_is_named() {
    let text = error::<DevConfig>("access:\n  htpasswd: /nonexistent/htpasswd\n");
    assert!(text.contains("at `access.htpasswd`"), "{text}");
    assert!(text.contains("cannot read /nonexistent/htpasswd"), "{text}");
}

#[test]
fn a_line_that_is_not_bcrypt_is_named_with_its_file_and_number() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("users");
    std::fs::write(&htpasswd, format!("{ALICE}bob:$apr1$xyz$abc\n")).unwrap();
    let text = error::<ProxyConfig>(&format!("access:\n  htpasswd: {}\n", htpasswd.display()));
    assert!(text.contains("at `access.htpasswd`"), "{text}");
    assert!(
        text.contains(&format!("{}: line 2", htpasswd.display())),
        "{text}"
    );
    assert!(text.contains("\"bob\" is not bcrypt"), "{text}");
}

#[test]
fn anonymous_pull_without_htpasswd_is_refused() {
    let text = error::<DevConfig>("access:\n  anonymous_pull: ['.*']\n");
    assert!(text.contains("at `access.anonymous_pull`"), "{text}");
    assert!(text.contains("without `access.htpasswd`"), "{text}");
}

#[test]
fn bad_token_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("short-key");
    std::fs::write(&key, b"too short").unwrap();
    let text = error::<DevConfig>(&format!(
        "access:\n  token:\n    expiry: 30s\n    key_file: {}\n    realm: ftp://x/token\n  max_failed_logins: 0\n  failed_login_window: 0s\n  anonymous_pull: ['(']\n",
        key.display()
    ));
    assert!(text.contains("access.anonymous_pull[0]"), "{text}");
    let text = error::<DevConfig>(&format!(
        "access:\n  token:\n    expiry: 30s\n    key_file: {}\n    realm: ftp://x/token\n  max_failed_logins: 0\n  failed_login_window: 0s\n",
        key.display()
    ));
    for key in [
        "access.token.expiry",
        "access.token.key_file",
        "access.token.realm",
        "access.max_failed_logins",
        "access.failed_login_window",
    ] {
        assert!(text.contains(&format!("at `{key}`")), "{key}: {text}");
    }
    assert!(text.contains("too short a key"), "{text}");
}

#[test]
fn unknown_keys_in_access_are_refused() {
    let text = error::<DevConfig>("access:\n  htpassword: /x\n");
    assert!(text.contains("access.htpassword"), "{text}");
    assert!(text.contains("did you mean `htpasswd`?"), "{text}");
}
