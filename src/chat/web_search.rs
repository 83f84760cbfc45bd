//! Web search as a server tool, provider-neutral: the search a client offers
//! ([`WebSearchTool`]), what one search asks the provider ([`SearchQuery`]) and what it
//! found ([`SearchOutcome`]). The model tier's [`crate::model::search`] layer runs the
//! searches; the adapters encode them in their API's own shape.

use std::fmt::Write as _;

/// The name the model calls the search tool by (Anthropic's name for it too).
pub const TOOL_NAME: &str = "web_search";

/// The longest query sent to the search service; a longer one is answered with
/// [`SearchErrorCode::QueryTooLong`] without a search.
pub const MAX_QUERY_CHARS: usize = 400;

/// The web search a client offered the model (Anthropic `web_search_*`, the Responses API's
/// `web_search`): aiproxy runs the searches the model asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebSearchTool {
    /// At most this many searches per request (`max_uses`); more are answered with
    /// [`SearchErrorCode::MaxUsesExceeded`].
    pub max_uses: Option<u32>,
    /// Only results from these domains (or their subdomains) are kept.
    pub allowed_domains: Vec<String>,
    /// Results from these domains (or their subdomains) are dropped.
    pub blocked_domains: Vec<String>,
    /// Where the user is, told to the model so it can localise its queries.
    pub user_location: Option<String>,
    /// At most this many results per search are kept (the Responses API's
    /// `search_context_size`).
    pub max_results: Option<usize>,
}

impl WebSearchTool {
    /// The tool's description, as the model reads it.
    pub fn description(&self) -> String {
        let mut text = String::from(
            "Search the web for current information. Call it with a search query; the results \
             (title, URL, publication date, an excerpt) come back as the tool's result. Use it \
             for anything recent or past your knowledge, then answer citing the URLs you used.",
        );
        if let Some(location) = &self.user_location {
            let _ = write!(text, " The user is in {location}: prefer results local to them when the question depends on place.");
        }
        if let Some(max) = self.max_uses {
            let _ = write!(text, " At most {max} searches in this answer.");
        }
        text
    }

    /// The tool's input schema: one query string.
    pub fn input_schema() -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {"query": {"type": "string", "description": "The search query"}},
            "required": ["query"]
        })
    }

    /// The hits the client's domain filters and result cap let through, in order.
    pub fn filter(&self, hits: Vec<SearchHit>) -> Vec<SearchHit> {
        let cap = self.max_results.unwrap_or(usize::MAX);
        hits.into_iter()
            .filter(|hit| {
                let host = host_of(&hit.url);
                let within = |domains: &[String]| {
                    domains
                        .iter()
                        .any(|domain| host.as_deref().is_some_and(|h| on_domain(h, domain)))
                };
                (self.allowed_domains.is_empty() || within(&self.allowed_domains))
                    && !within(&self.blocked_domains)
            })
            .take(cap)
            .collect()
    }
}

fn host_of(url: &str) -> Option<String> {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(str::to_ascii_lowercase))
}

/// Whether `host` is `domain` or one of its subdomains (`domain` may carry a scheme, a
/// leading `*.` or a path, as clients write them).
fn on_domain(host: &str, domain: &str) -> bool {
    let domain = domain.trim();
    let domain = domain
        .split_once("://")
        .map_or(domain, |(_, rest)| rest)
        .trim_start_matches("*.")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    !domain.is_empty()
        && (host == domain
            || host
                .strip_suffix(domain.as_str())
                .is_some_and(|rest| rest.ends_with('.')))
}

/// One search the provider is asked to run: a model-tier request extension that turns the
/// call into a search (the leaf answers it with one [`crate::chat::ChatEvent::WebSearchResult`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchQuery {
    /// The search's id, as the client sees it.
    pub id: String,
    /// What to search for.
    pub query: String,
}

/// One result of a search.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SearchHit {
    /// The page's title.
    pub title: String,
    /// The page's URL.
    pub url: String,
    /// An excerpt of the page.
    pub snippet: String,
    /// When the page was published, in words (`January 1, 2026`), when known.
    pub page_age: Option<String>,
}

/// Why a search has no results: Anthropic's `web_search_tool_result_error` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SearchErrorCode {
    /// The search service failed or could not be reached.
    Unavailable,
    /// The search service is rate limiting.
    TooManyRequests,
    /// The request's `max_uses` searches were spent.
    MaxUsesExceeded,
    /// The query is longer than [`MAX_QUERY_CHARS`].
    QueryTooLong,
    /// The model's call had no usable query.
    InvalidInput,
}

impl SearchErrorCode {
    /// Every code.
    pub const ALL: [SearchErrorCode; 5] = [
        Self::Unavailable,
        Self::TooManyRequests,
        Self::MaxUsesExceeded,
        Self::QueryTooLong,
        Self::InvalidInput,
    ];

    /// The code of a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == name)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::TooManyRequests => "too_many_requests",
            Self::MaxUsesExceeded => "max_uses_exceeded",
            Self::QueryTooLong => "query_too_long",
            Self::InvalidInput => "invalid_tool_input",
        }
    }

    /// What it means, for the model.
    fn explain(self) -> &'static str {
        match self {
            Self::Unavailable => "the search service failed; answer from what you know and say that the search failed",
            Self::TooManyRequests => "the search service is rate limiting; answer from what you know",
            Self::MaxUsesExceeded => "no searches are left for this answer; answer with the results you have",
            Self::QueryTooLong => "the query is too long; search again with a shorter one",
            Self::InvalidInput => "the call had no query; call the tool with {\"query\": \"...\"}",
        }
    }
}

/// What one search found.
pub type SearchOutcome = Result<Vec<SearchHit>, SearchErrorCode>;

/// A search and its outcome as text the model reads (the tool result of the search, and
/// a search block replayed from the conversation's history, whose query may be unknown:
/// empty).
pub fn render(query: &str, outcome: &SearchOutcome) -> String {
    let about = if query.is_empty() {
        String::new()
    } else {
        format!(" for \"{query}\"")
    };
    let mut text = String::new();
    match outcome {
        Err(code) => {
            let _ = write!(
                text,
                "Web search{about} failed ({}): {}.",
                code.as_str(),
                code.explain()
            );
        }
        Ok(hits) if hits.is_empty() => {
            let _ = write!(text, "Web search{about} found nothing.");
        }
        Ok(hits) => {
            let _ = write!(text, "Web search results{about}:");
            for (n, hit) in hits.iter().enumerate() {
                let _ = write!(text, "\n{}. {}\n   URL: {}", n + 1, hit.title, hit.url);
                if let Some(age) = &hit.page_age {
                    let _ = write!(text, "\n   Published: {age}");
                }
                if !hit.snippet.is_empty() {
                    let _ = write!(text, "\n   {}", hit.snippet);
                }
            }
        }
    }
    text
}

/// A query the request's author asked to be searched in so many words: the first user
/// text of Claude Code's WebSearch requests (docs/kiro-protocol.md §14.1). Such a request
/// is searched at once, without asking the model for the query first.
pub fn asked_query(text: &str) -> Option<&str> {
    text.trim()
        .strip_prefix("Perform a web search for the query: ")
        .map(str::trim)
        .filter(|query| !query.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(url: &str) -> SearchHit {
        SearchHit {
            title: "t".into(),
            url: url.into(),
            snippet: String::new(),
            page_age: None,
        }
    }

    #[test]
    fn domain_filters_match_the_domain_and_its_subdomains_only() {
        let hits = || {
            vec![
                hit("https://example.com/a"),
                hit("https://docs.example.com/b"),
                hit("https://notexample.com/c"),
                hit("https://other.org/d"),
            ]
        };
        let urls = |tool: WebSearchTool| -> Vec<String> {
            tool.filter(hits()).into_iter().map(|h| h.url).collect()
        };
        let allowed = WebSearchTool {
            allowed_domains: vec!["https://Example.com/".into()],
            ..WebSearchTool::default()
        };
        assert_eq!(
            urls(allowed),
            ["https://example.com/a", "https://docs.example.com/b"]
        );
        let blocked = WebSearchTool {
            blocked_domains: vec!["*.example.com".into()],
            max_results: Some(2),
            ..WebSearchTool::default()
        };
        assert_eq!(
            urls(blocked),
            ["https://notexample.com/c", "https://other.org/d"]
        );
    }

    #[test]
    fn results_and_failures_read_as_text() {
        let found = render(
            "rust",
            &Ok(vec![SearchHit {
                title: "Rust".into(),
                url: "https://rust-lang.org".into(),
                snippet: "A language".into(),
                page_age: Some("January 1, 2026".into()),
            }]),
        );
        assert_eq!(found, "Web search results for \"rust\":\n1. Rust\n   URL: https://rust-lang.org\n   Published: January 1, 2026\n   A language");
        let failed = render("rust", &Err(SearchErrorCode::MaxUsesExceeded));
        assert!(failed.contains("max_uses_exceeded"), "{failed}");
        assert_eq!(
            asked_query("Perform a web search for the query: kiro news "),
            Some("kiro news")
        );
        assert_eq!(asked_query("what is new?"), None);
    }
}
