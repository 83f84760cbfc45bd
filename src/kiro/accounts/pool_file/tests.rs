use super::*;
use base64::Engine;

const SOCIAL: &str = r#"{"accessToken":"a","refreshToken":"r","expiresAt":"2030-01-01T00:00:00Z","authMethod":"social"}"#;

fn dir() -> tempdir::Dir {
    tempdir::Dir::new()
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(format!("aiproxy-pool-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
        pub fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn our_shape_with_every_credential_source() {
    let d = dir();
    d.write("a.json", SOCIAL);
    let b64 = base64::engine::general_purpose::STANDARD.encode(SOCIAL);
    let pools = d.write(
        "provider_pools.json",
        &format!(
            r#"{{"kiro-api": [
                {{"name": "a", "credsFile": "a.json", "weight": 3, "maxConcurrency": 4,
                  "baseUrl": "http://127.0.0.1:1", "checkModel": "claude-haiku-4.5"}},
                {{"name": "b", "credsBase64": "{b64}", "enabled": false}},
                {{"credentials": {SOCIAL}}}
            ]}}"#
        ),
    );
    let instances = load(&pools).unwrap();
    let names: Vec<_> = instances.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "kiro-api-3"]);
    let a = &instances[0];
    assert_eq!((a.weight, a.max_concurrency, a.enabled), (3, Some(4), true));
    assert_eq!(a.base_url.as_deref(), Some("http://127.0.0.1:1"));
    assert_eq!(a.credentials.source, Source::File(d.0.join("a.json")));
    assert!(!instances[1].enabled);
    assert_eq!(instances[2].weight, 1);
}

#[test]
fn aiclient_2_api_example_loads_as_is() {
    let d = dir();
    d.write("kiro-auth-token.json", SOCIAL);
    // The shape of AIClient-2-API's configs/provider_pools.json.example, runtime fields included.
    let pools = d.write(
        "provider_pools.json",
        r#"{
          "openai-custom": [{"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "https://api.openai.com/v1", "uuid": "1"}],
          "claude-kiro-oauth": [
            {"KIRO_OAUTH_CREDS_FILE_PATH": "./kiro-auth-token.json", "uuid": "2f579c65-d3c5-41b1-9985-9f6e3d7bf39c",
             "customName": "kiro-main", "checkModelName": null, "checkHealth": false, "isHealthy": true,
             "isDisabled": false, "lastUsed": null, "usageCount": 0, "errorCount": 0, "lastErrorTime": null},
            {"KIRO_OAUTH_CREDS_FILE_PATH": "./kiro-auth-token.json", "uuid": "7c1e", "isDisabled": true}
          ]
        }"#,
    );
    let instances = load(&pools).unwrap();
    assert_eq!(instances.len(), 2, "other providers' entries are not ours");
    assert_eq!(instances[0].name, "kiro-main");
    assert_eq!(instances[1].name, "7c1e", "the uuid names an unnamed node");
    assert!(instances[0].enabled && !instances[1].enabled);
}

#[test]
fn errors_name_the_instance_and_the_field() {
    let d = dir();
    d.write("a.json", SOCIAL);
    let cases = [
        (
            r#"{"kiro-api": [{"name": "x", "credsFile": "a.json", "wieght": 2}]}"#,
            "kiro-api[0] (x): unknown field `wieght`",
        ),
        (
            r#"{"kiro-api": [{"name": "x"}]}"#,
            "kiro-api[0] (x): no credentials: set one of `credsFile`, `credsBase64`, `credentials`",
        ),
        (
            r#"{"kiro-api": [{"name": "x", "credsFile": "a.json", "credsBase64": "e30="}]}"#,
            "set only one of",
        ),
        (
            r#"{"kiro-api": [{"name": "x", "credsFile": "a.json", "weight": 0}]}"#,
            "`weight` must be at least 1",
        ),
        (
            r#"{"kiro-api": [{"name": "x", "credsFile": "a.json", "baseUrl": "ftp://h"}]}"#,
            "`baseUrl` = `ftp://h` is not an http",
        ),
        (
            r#"{"kiro-api": [{"name": "x", "credsFile": "missing.json"}]}"#,
            "kiro-api[0] (x): Kiro credentials missing.json: cannot read",
        ),
        (
            r#"{"kiro-api": [{"name": "x", "credsFile": "a.json"}, {"name": "x", "credsFile": "a.json"}]}"#,
            "two instances are named `x`",
        ),
        (r#"{"kiro-api": {}}"#, "`kiro-api` must be an array"),
        (r#"{"other": []}"#, "no instances"),
        ("[1]", "expected a JSON object"),
    ];
    for (text, expected) in cases {
        let path = d.write("p.json", text);
        let message = load(&path).unwrap_err().to_string();
        assert!(message.contains(expected), "{text}: {message}");
        assert!(!message.contains("\"r\""), "no secret in {message}");
    }
}
