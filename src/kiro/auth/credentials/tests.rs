use super::*;
use serde_json::json;

fn parse_json(value: Value) -> Result<Credentials, CredentialError> {
    let Value::Object(map) = value else { panic!() };
    parse(
        &map,
        Source::Base64 {
            origin: "--kiro-oauth-creds-base64",
        },
        None,
    )
}

#[test]
fn seed_format() {
    let c = parse_json(json!({
        "client_id": "cid", "client_secret": "cs", "token_url": "https://api.kiro.com/oauth/token",
        "refresh_token": "rt", "scope": "api.access"
    }))
    .unwrap();
    assert_eq!(c.format.name(), "oauth2");
    assert_eq!(c.refresh_token.expose(), "rt");
    match c.format {
        Format::Seed {
            token_url, scope, ..
        } => {
            assert_eq!(token_url, "https://api.kiro.com/oauth/token");
            assert_eq!(scope.as_deref(), Some("api.access"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn social_format() {
    let c = parse_json(json!({
        "accessToken": "at", "refreshToken": "rt", "profileArn": "arn:aws:codewhisperer:us-east-1:1:profile/P",
        "expiresAt": "2025-12-31T02:32:45.144Z", "authMethod": "social", "provider": "Google"
    }))
    .unwrap();
    assert_eq!(c.format, Format::Social);
    assert_eq!(c.access_token.unwrap().expose(), "at");
    assert_eq!(
        format_time(c.expires_at.unwrap()),
        "2025-12-31T02:32:45.144Z"
    );
    assert_eq!(
        c.profile_arn.as_deref(),
        Some("arn:aws:codewhisperer:us-east-1:1:profile/P")
    );
}

#[test]
fn idc_format_inline_and_by_hash() {
    let c = parse_json(json!({"refreshToken": "rt", "clientId": "c", "clientSecret": "s", "authMethod": "IdC", "region": "eu-west-1"})).unwrap();
    assert_eq!(c.format.name(), "idc");
    assert_eq!(c.region.as_deref(), Some("eu-west-1"));

    let dir = std::env::temp_dir().join(format!("aiproxy-creds-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("abc123.json"),
        r#"{"clientId":"cid","clientSecret":"csecret","expiresAt":"2030-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let token = dir.join("kiro-auth-token.json");
    std::fs::write(&token, r#"{"refreshToken":"rt","accessToken":"at","authMethod":"IdC","provider":"BuilderId","clientIdHash":"abc123","expiresAt":"2025-01-01T00:00:00+00:00"}"#).unwrap();
    let c = from_file(&token).unwrap();
    match &c.format {
        Format::Idc {
            client_id,
            client_secret,
        } => {
            assert_eq!(client_id, "cid");
            assert_eq!(client_secret.expose(), "csecret");
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_file(dir.join("abc123.json")).unwrap();
    let err = from_file(&token).unwrap_err().to_string();
    assert!(
        err.contains("abc123.json") && err.contains("clientIdHash"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn errors_name_source_and_field_never_values() {
    let err =
        parse_json(json!({"client_id": "cid", "client_secret": "TOPSECRET", "token_url": "https://auth.example/token"}))
            .unwrap_err()
            .to_string();
    assert!(err.contains("`refresh_token` is missing"), "{err}");
    assert!(err.contains("--kiro-oauth-creds-base64"), "{err}");
    assert!(!err.contains("TOPSECRET"));

    let err = parse_json(json!({"refreshToken": "r", "profileArn": 5}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`profileArn` must be a string when present") && !err.contains("need it"),
        "{err}"
    );

    let err = parse_json(json!({"refreshToken": 5}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`refreshToken`") && err.contains("not a string"),
        "{err}"
    );

    let err = parse_json(json!({"refreshToken": "SECRETRT", "expiresAt": "tomorrow"}))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expiresAt") && !err.contains("SECRETRT") && !err.contains("tomorrow"),
        "{err}"
    );

    let err = from_base64("%%%", "KIRO_OAUTH_CREDS_BASE64")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not valid base64"), "{err}");
    let err = from_base64("bm90IGpzb24=", "KIRO_OAUTH_CREDS_BASE64")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not valid JSON") && !err.contains("not json"),
        "{err}"
    );

    let err = from_file(Path::new("/nonexistent/creds.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/creds.json") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn base64_variants_decode() {
    use base64::Engine;
    let json = r#"{"refreshToken":"rt"}"#;
    let standard = base64::engine::general_purpose::STANDARD.encode(json);
    let wrapped = format!("{}\n{}\n", &standard[..10], &standard[10..]);
    assert!(from_base64(&standard, "x").is_ok());
    assert!(
        from_base64(&wrapped, "x").is_ok(),
        "echo | base64 wraps lines"
    );
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    assert!(from_base64(&url, "x").is_ok());
}

#[test]
fn times() {
    assert_eq!(
        parse_time("1700000000"),
        Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    );
    assert_eq!(
        parse_time("1700000000000"),
        Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    );
    assert_eq!(
        parse_time("2025-12-31T02:32:45.144+01:00")
            .map(format_time)
            .as_deref(),
        Some("2025-12-31T01:32:45.144Z")
    );
    assert!(parse_time("NaN").is_none());
}

#[test]
fn a_file_of_no_known_format_lists_every_formats_fields() {
    let err = parse_json(json!({"token": "x", "user": "me"}))
        .unwrap_err()
        .to_string();
    for field in [
        "token_url",
        "client_id",
        "refreshToken",
        "clientIdHash",
        "authMethod",
    ] {
        assert!(err.contains(field), "{field} missing from: {err}");
    }
    assert!(!err.contains("me"), "never a value: {err}");
}

#[test]
fn a_token_url_that_is_not_http_is_refused_naming_the_field() {
    let err = parse_json(json!({"client_id": "c", "client_secret": "s",
        "token_url": "file:///etc/passwd", "refresh_token": "r"}))
    .unwrap_err()
    .to_string();
    assert!(err.contains("`token_url`") && err.contains("http"), "{err}");
    assert!(!err.contains("passwd"), "never a value: {err}");
}
