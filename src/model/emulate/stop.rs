//! Stop sequences over text that arrives in pieces: Kiro takes no stop list, so aiproxy
//! finds the first match itself, also when it is split across upstream events.

/// Finds the first stop sequence in a text stream. Text that could be the start of a
/// sequence is held back until the next piece says whether it is one.
#[derive(Debug)]
pub struct StopMatcher {
    sequences: Vec<String>,
    held: String,
}

/// What one piece of text released.
#[derive(Debug, PartialEq, Eq)]
pub struct Released {
    /// Text that is certainly before any match: pass it on.
    pub text: String,
    /// The sequence that matched, if one did (nothing after it may be passed on).
    pub matched: Option<String>,
}

impl StopMatcher {
    /// Matches `sequences` (none empty).
    pub fn new(sequences: Vec<String>) -> Self {
        Self {
            sequences,
            held: String::new(),
        }
    }

    /// Takes the next piece of text.
    pub fn push(&mut self, piece: &str) -> Released {
        self.held.push_str(piece);
        if let Some((at, sequence)) = self.first_match() {
            let mut text = std::mem::take(&mut self.held);
            text.truncate(at);
            return Released {
                text,
                matched: Some(sequence),
            };
        }
        let keep = self.possible_start();
        let text = self.held[..keep].to_owned();
        self.held.drain(..keep);
        Released {
            text,
            matched: None,
        }
    }

    /// Releases what is held back: the text ended (or something other than text came).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// The earliest match in the held text; of two starting at the same place, the longer.
    fn first_match(&self) -> Option<(usize, String)> {
        let mut best: Option<(usize, &String)> = None;
        for sequence in &self.sequences {
            if let Some(at) = self.held.find(sequence.as_str()) {
                let better = match best {
                    None => true,
                    Some((best_at, best_seq)) => {
                        at < best_at || (at == best_at && sequence.len() > best_seq.len())
                    }
                };
                if better {
                    best = Some((at, sequence));
                }
            }
        }
        best.map(|(at, sequence)| (at, sequence.clone()))
    }

    /// Where the longest tail of the held text that begins some sequence starts (the
    /// held text's length when no tail does).
    fn possible_start(&self) -> usize {
        let held = self.held.as_str();
        let mut start = held.len();
        for sequence in &self.sequences {
            // Proper prefixes only: a whole sequence would have matched.
            for (cut, _) in sequence.char_indices().skip(1) {
                let prefix = &sequence[..cut];
                if cut <= held.len() && held.len() - cut < start && held.ends_with(prefix) {
                    start = held.len() - cut;
                }
            }
        }
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(sequences: &[&str]) -> StopMatcher {
        StopMatcher::new(sequences.iter().map(|s| s.to_string()).collect())
    }

    /// Feeds `pieces` and returns everything released before a match, and the match.
    fn run(sequences: &[&str], pieces: &[&str]) -> (String, Option<String>) {
        let mut m = matcher(sequences);
        let mut out = String::new();
        for piece in pieces {
            let released = m.push(piece);
            out.push_str(&released.text);
            if released.matched.is_some() {
                return (out, released.matched);
            }
        }
        out.push_str(&m.flush());
        (out, None)
    }

    #[test]
    fn a_match_inside_one_piece_cuts_before_it() {
        assert_eq!(
            run(&["END"], &["one two END three"]),
            ("one two ".into(), Some("END".into()))
        );
    }

    #[test]
    fn a_match_split_across_pieces_is_found_and_nothing_of_it_leaks() {
        let mut m = matcher(&["STOP HERE"]);
        assert_eq!(m.push("text ST").text, "text ", "a possible start is held");
        assert_eq!(m.push("OP ").text, "");
        let last = m.push("HERE and more");
        assert_eq!(last.text, "");
        assert_eq!(last.matched.as_deref(), Some("STOP HERE"));
        assert_eq!(
            run(&["\n\n"], &["a\n", "\nb"]),
            ("a".into(), Some("\n\n".into()))
        );
    }

    #[test]
    fn a_false_start_is_released_and_the_end_flushes_what_is_held() {
        assert_eq!(
            run(&["END"], &["the EN", "D"]),
            ("the ".into(), Some("END".into()))
        );
        assert_eq!(
            run(&["END"], &["the EN", "ding"]),
            ("the ENding".into(), None)
        );
        assert_eq!(
            run(&["END"], &["ends with E"]),
            ("ends with E".into(), None)
        );
    }

    #[test]
    fn the_earliest_of_several_sequences_wins_and_multibyte_text_is_safe() {
        assert_eq!(
            run(&["zz", "b"], &["a b zz"]),
            ("a ".into(), Some("b".into()))
        );
        assert_eq!(
            run(&["ab", "abc"], &["xabc"]),
            ("x".into(), Some("abc".into()))
        );
        assert_eq!(
            run(&["。结束"], &["你好。", "结", "束了"]),
            ("你好".into(), Some("。结束".into()))
        );
        assert_eq!(run(&["é!"], &["café", " ok"]), ("café ok".into(), None));
    }
}
