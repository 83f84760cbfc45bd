//! Kiro credentials: where they come from and which of the three formats they are
//! (docs/kiro-protocol.md §2-3).
//!
//! | format | detected by | refresh |
//! |---|---|---|
//! | generic OAuth2 (product guide) | `token_url` / snake_case `refresh_token` | form `grant_type=refresh_token` to `token_url`, snake_case answer |
//! | Kiro social | `authMethod: social`, or `refreshToken` without client fields | JSON `{refreshToken}` to `/refreshToken` |
//! | Kiro IdC / Builder ID | `authMethod: IdC`, `clientId`+`clientSecret`, or `clientIdHash` | JSON camelCase to `oidc.{region}.amazonaws.com/token` |
//! | external identity provider (docs/kiro-protocol.md §14.2) | `authMethod: external_idp`, or `tokenEndpoint` | form `grant_type=refresh_token` (public client) to `tokenEndpoint`; bearer with `TokenType: EXTERNAL_IDP` |
//! | Kiro API key (docs/kiro-protocol.md §14.2) | `kiroApiKey` (`ksk_...`), `authMethod: api_key` | none: sent as it is with `tokentype: API_KEY` |
//!
//! Errors name the source and the missing or malformed field, never a value.

use crate::secret::Secret;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Kiro IDE's own login file, relative to the home directory.
pub const KIRO_IDE_TOKEN_FILE: &str = ".aws/sso/cache/kiro-auth-token.json";

/// Where a credential came from (and where rotated tokens go back to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A JSON file, rewritten in place when tokens rotate.
    File(PathBuf),
    /// Base64 text from a flag or the environment; rotated tokens go to a state file.
    Base64 {
        /// Which flag/variable, for messages.
        origin: &'static str,
    },
}

impl Source {
    /// For messages: the file path or the flag name.
    pub fn describe(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Base64 { origin } => origin.to_string(),
        }
    }
}

/// How the refresh token is exchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// The product guide's generic OAuth2 shape.
    Seed {
        /// `client_id`.
        client_id: String,
        /// `client_secret`.
        client_secret: Secret,
        /// `token_url`.
        token_url: String,
        /// `scope`, if given.
        scope: Option<String>,
    },
    /// Kiro desktop social login (Google/GitHub).
    Social,
    /// AWS Builder ID / IAM Identity Center.
    Idc {
        /// OIDC client id.
        client_id: String,
        /// OIDC client secret.
        client_secret: Secret,
    },
    /// An external identity provider's token (Entra ID, Okta through IdC), refreshed at the
    /// tenant's own token endpoint as a public client.
    ExternalIdp {
        /// The public client's id.
        client_id: String,
        /// The tenant's token endpoint.
        token_endpoint: String,
        /// `scope`, if given.
        scope: Option<String>,
    },
    /// A Kiro API key (`ksk_...`): the bearer itself, never refreshed. The key is the
    /// credential's `access_token`; its `refresh_token` is empty.
    ApiKey,
}

impl Format {
    /// Short name for logs and admin output.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Seed { .. } => "oauth2",
            Self::Social => "social",
            Self::Idc { .. } => "idc",
            Self::ExternalIdp { .. } => "external_idp",
            Self::ApiKey => "api_key",
        }
    }

    /// The `tokentype` header its bearer goes with, when it needs one.
    pub fn token_type(&self) -> Option<&'static str> {
        match self {
            Self::ApiKey => Some("API_KEY"),
            Self::ExternalIdp { .. } => Some("EXTERNAL_IDP"),
            _ => None,
        }
    }
}

/// A parsed credential.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// Where it came from.
    pub source: Source,
    /// Refresh flavour.
    pub format: Format,
    /// Long-lived token exchanged for access tokens.
    pub refresh_token: Secret,
    /// Current access token, if the file has one.
    pub access_token: Option<Secret>,
    /// When the access token expires, if known.
    pub expires_at: Option<SystemTime>,
    /// `profileArn`, sent with requests when known.
    pub profile_arn: Option<String>,
    /// `region` of the login (refresh endpoint region).
    pub region: Option<String>,
}

/// Why a credential cannot be used. Never contains a secret value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The file could not be read.
    #[error("Kiro credentials {source_name}: cannot read the file: {reason}")]
    Unreadable {
        /// File or flag.
        source_name: String,
        /// OS error.
        reason: String,
    },
    /// Not base64 / not JSON / not an object.
    #[error("Kiro credentials {source_name}: {reason}")]
    Malformed {
        /// File or flag.
        source_name: String,
        /// What is wrong (no values).
        reason: String,
    },
    /// A required field is missing or has the wrong type.
    #[error("Kiro credentials {source_name}: field `{field}` is {problem} ({format} credentials need it)")]
    Field {
        /// File or flag.
        source_name: String,
        /// The field.
        field: String,
        /// `missing`, `not a string`, `empty`.
        problem: &'static str,
        /// The detected format.
        format: &'static str,
    },
}

/// Reads and parses a credential file.
pub fn from_file(path: &Path) -> Result<Credentials, CredentialError> {
    let source = Source::File(path.to_path_buf());
    recover(path, &source);
    let text = std::fs::read_to_string(path).map_err(|e| CredentialError::Unreadable {
        source_name: source.describe(),
        reason: e.to_string(),
    })?;
    let object = parse_object(&text, &source)?;
    parse(&object, source, path.parent())
}

/// Puts back a rotated token that a crash left in an orphan temp file (see
/// [`crate::kiro::auth::persist`]) before the file is read.
pub fn recover(path: &Path, source: &Source) {
    let recovery = crate::kiro::auth::persist::recover_orphans(path);
    if recovery.adopted.is_some() {
        tracing::warn!(
            source = %source.describe(),
            "recovered a rotated refresh token that an interrupted write-back had left in a temp file"
        );
    }
    if recovery.removed > 0 {
        tracing::info!(source = %source.describe(), removed = recovery.removed, "removed stale token temp files");
    }
}

/// Decodes and parses base64 credentials (whitespace, padding and URL-safe forms accepted).
pub fn from_base64(text: &str, origin: &'static str) -> Result<Credentials, CredentialError> {
    let source = Source::Base64 { origin };
    let json = decode_base64(text).ok_or_else(|| CredentialError::Malformed {
        source_name: source.describe(),
        reason: "the value is not valid base64; encode the JSON credential file with `base64 -w0`"
            .into(),
    })?;
    let text = String::from_utf8(json).map_err(|_| CredentialError::Malformed {
        source_name: source.describe(),
        reason: "the decoded value is not UTF-8 JSON".into(),
    })?;
    let object = parse_object(&text, &source)?;
    parse(&object, source, None)
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(&compact).ok())
}

fn parse_object(text: &str, source: &Source) -> Result<Map<String, Value>, CredentialError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(CredentialError::Malformed {
            source_name: source.describe(),
            reason: "expected a JSON object".into(),
        }),
        Err(e) => Err(CredentialError::Malformed {
            source_name: source.describe(),
            // serde_json's message carries line/column only, never the content.
            reason: format!("not valid JSON ({e})"),
        }),
    }
}

/// Detects the format of a credential object and extracts its fields. `dir` is where a
/// `clientIdHash` registration file is looked up.
pub fn parse(
    object: &Map<String, Value>,
    source: Source,
    dir: Option<&Path>,
) -> Result<Credentials, CredentialError> {
    let fields = Fields {
        object,
        source: &source,
    };
    let auth_method = fields
        .optional("authMethod")?
        .map(|m| m.to_ascii_lowercase());
    if object.contains_key("kiroApiKey") || auth_method.as_deref() == Some("api_key") {
        return api_key(&fields);
    }
    if !["refreshToken", "refresh_token", "token_url"]
        .iter()
        .any(|key| object.contains_key(*key))
    {
        return Err(CredentialError::Malformed {
            source_name: source.describe(),
            reason: "these are not Kiro credentials of any known format. Expected one of: \
                     generic OAuth2 (`client_id`, `client_secret`, `token_url`, `refresh_token`, optional `scope`); \
                     Kiro social (`refreshToken`, optional `accessToken`, `expiresAt`, `profileArn`, `authMethod: \"social\"`); \
                     Kiro IdC (`refreshToken`, `clientId` + `clientSecret` or `clientIdHash`, `authMethod: \"IdC\"`); \
                     a Kiro API key (`kiroApiKey: \"ksk_...\"`, `authMethod: \"api_key\"`)"
                .into(),
        });
    }
    let is_seed = object.contains_key("token_url") || object.contains_key("refresh_token");
    let format = if is_seed {
        let token_url = fields.required("token_url", "oauth2")?;
        if !(token_url.starts_with("https://") || token_url.starts_with("http://")) {
            return Err(CredentialError::Field {
                source_name: source.describe(),
                field: "token_url".into(),
                problem: "not an http:// or https:// URL",
                format: "oauth2",
            });
        }
        Format::Seed {
            client_id: fields.required("client_id", "oauth2")?,
            client_secret: Secret::new(fields.required("client_secret", "oauth2")?),
            token_url,
            scope: fields.optional("scope")?,
        }
    } else if matches!(auth_method.as_deref(), Some("external_idp" | "externalidp"))
        || object.contains_key("tokenEndpoint")
    {
        external_idp(&fields)?
    } else if auth_method.as_deref() == Some("social")
        || (auth_method.is_none()
            && !object.contains_key("clientId")
            && !object.contains_key("clientIdHash"))
    {
        Format::Social
    } else {
        let (client_id, client_secret) = idc_client(&fields, dir)?;
        Format::Idc {
            client_id,
            client_secret,
        }
    };
    let format_name = format.name();
    let (refresh_key, access_key, expires_key, arn_key) = if is_seed {
        ("refresh_token", "access_token", "expires_at", "profile_arn")
    } else {
        ("refreshToken", "accessToken", "expiresAt", "profileArn")
    };
    let refresh_token = Secret::new(fields.required(refresh_key, format_name)?);
    let access_token = fields
        .optional(access_key)?
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    let expires_at = match fields.optional(expires_key)? {
        Some(text) => Some(parse_time(&text).ok_or_else(|| CredentialError::Field {
            source_name: source.describe(),
            field: expires_key.into(),
            problem: "not an RFC 3339 time (e.g. 2025-12-31T02:32:45.144Z)",
            format: format_name,
        })?),
        None => None,
    };
    Ok(Credentials {
        format,
        refresh_token,
        access_token,
        expires_at,
        profile_arn: fields.optional(arn_key)?,
        region: fields.optional("region")?,
        source,
    })
}

/// An external identity provider's client: `clientId`, `tokenEndpoint` (https, on the
/// `issuerUrl`'s host when that is given; plain http only on the loopback, for tests),
/// optional `scope`.
fn external_idp(fields: &Fields<'_>) -> Result<Format, CredentialError> {
    let token_endpoint = fields.required("tokenEndpoint", "external_idp")?;
    let problem = |problem: &'static str| CredentialError::Field {
        source_name: fields.source.describe(),
        field: "tokenEndpoint".into(),
        problem,
        format: "external_idp",
    };
    let uri: http::Uri = token_endpoint.parse().map_err(|_| problem("not a URL"))?;
    let host = uri.host().unwrap_or_default().to_ascii_lowercase();
    let loopback = matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]" | "::1");
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if loopback => {}
        _ => return Err(problem("not an https:// URL")),
    }
    if let Some(issuer) = fields.optional("issuerUrl")? {
        let issuer_host = issuer
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_ascii_lowercase));
        if issuer_host.as_deref() != Some(host.as_str()) {
            return Err(problem("not on the `issuerUrl`'s host"));
        }
    }
    Ok(Format::ExternalIdp {
        client_id: fields.required("clientId", "external_idp")?,
        token_endpoint,
        scope: fields.optional("scope")?,
    })
}

/// A Kiro API key credential: `{"kiroApiKey": "ksk_...", "authMethod": "api_key"}`, with an
/// optional `profileArn` and `region`.
fn api_key(fields: &Fields<'_>) -> Result<Credentials, CredentialError> {
    let source = fields.source.clone();
    let key = fields.required("kiroApiKey", "api_key")?;
    if !key.starts_with("ksk_") {
        return Err(CredentialError::Field {
            source_name: source.describe(),
            field: "kiroApiKey".into(),
            problem: "not a Kiro API key (those start with `ksk_`)",
            format: "api_key",
        });
    }
    Ok(Credentials {
        format: Format::ApiKey,
        refresh_token: Secret::new(String::new()),
        access_token: Some(Secret::new(key)),
        expires_at: None,
        profile_arn: fields.optional("profileArn")?,
        region: fields.optional("region")?,
        source,
    })
}

/// A credential made of a Kiro API key alone (`--kiro-api-key` / `KIRO_API_KEY`).
pub fn from_api_key(key: &str, origin: &'static str) -> Result<Credentials, CredentialError> {
    let mut object = Map::new();
    object.insert("kiroApiKey".into(), Value::String(key.trim().to_owned()));
    parse(&object, Source::Base64 { origin }, None)
}

impl Credentials {
    /// The secret that tells this login from others (the refresh token, or an API key).
    pub fn login_secret(&self) -> &Secret {
        match (&self.format, &self.access_token) {
            (Format::ApiKey, Some(key)) => key,
            _ => &self.refresh_token,
        }
    }
}

/// IdC client registration: inline, or in `<clientIdHash>.json` beside the token file.
fn idc_client(
    fields: &Fields<'_>,
    dir: Option<&Path>,
) -> Result<(String, Secret), CredentialError> {
    if fields.object.contains_key("clientId") || fields.object.get("clientIdHash").is_none() {
        return Ok((
            fields.required("clientId", "idc")?,
            Secret::new(fields.required("clientSecret", "idc")?),
        ));
    }
    let hash = fields.required("clientIdHash", "idc")?;
    let Some(dir) = dir else {
        return Err(CredentialError::Malformed {
            source_name: fields.source.describe(),
            reason: "`clientIdHash` points at a registration file, which only works for credential files; \
                     put `clientId` and `clientSecret` into the credentials instead"
                .into(),
        });
    };
    if hash.contains(['/', '\\']) || hash.contains("..") {
        return Err(CredentialError::Field {
            source_name: fields.source.describe(),
            field: "clientIdHash".into(),
            problem: "not a plain file name",
            format: "idc",
        });
    }
    let path = dir.join(format!("{hash}.json"));
    let registration_source = Source::File(path.clone());
    let text = std::fs::read_to_string(&path).map_err(|e| CredentialError::Unreadable {
        source_name: registration_source.describe(),
        reason: format!("{e} (the IdC registration named by `clientIdHash`)"),
    })?;
    let object = parse_object(&text, &registration_source)?;
    let registration = Fields {
        object: &object,
        source: &registration_source,
    };
    Ok((
        registration.required("clientId", "idc")?,
        Secret::new(registration.required("clientSecret", "idc")?),
    ))
}

struct Fields<'a> {
    object: &'a Map<String, Value>,
    source: &'a Source,
}

impl Fields<'_> {
    fn optional(&self, key: &str) -> Result<Option<String>, CredentialError> {
        match self.object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            // Optional, so not "needed": say only what is wrong with it.
            Some(_) => Err(CredentialError::Malformed {
                source_name: self.source.describe(),
                reason: format!("field `{key}` must be a string when present"),
            }),
        }
    }

    fn required(&self, key: &str, format: &'static str) -> Result<String, CredentialError> {
        let problem = match self.object.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => return Ok(s.clone()),
            Some(Value::String(_)) => "empty",
            None | Some(Value::Null) => "missing",
            Some(_) => "not a string",
        };
        Err(CredentialError::Field {
            source_name: self.source.describe(),
            field: key.into(),
            problem,
            format,
        })
    }
}

/// Parses RFC 3339 (`2025-12-31T02:32:45.144Z`, `...+00:00`) or Unix seconds/millis.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Ok(number) = text.parse::<u64>() {
        let seconds = if number > 100_000_000_000 {
            number / 1000
        } else {
            number
        };
        return Some(UNIX_EPOCH + Duration::from_secs(seconds));
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// RFC 3339 in UTC with milliseconds (`2025-12-31T02:32:45.144Z`), as Kiro writes it.
pub fn format_time(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    let at = at
        .replace_nanosecond(at.millisecond() as u32 * 1_000_000)
        .unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The home directory's Kiro IDE token file, if it exists.
pub fn kiro_ide_token_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = PathBuf::from(home).join(KIRO_IDE_TOKEN_FILE);
    path.is_file().then_some(path)
}

#[cfg(test)]
mod tests;
