//! X-Ray's wildcard patterns (`*` any run of characters, `?` exactly one, the rest literal,
//! ASCII case ignored, anchored at both ends), compiled once and matched in time linear in the
//! text: sampling rules are matched against every request's path, which the caller writes.
//!
//! The former matcher backtracked on each `*`, so a pattern with many stars against a long
//! path cost the product of their lengths (25 X-Ray-legal rules of 128 characters against a
//! 2 KiB path: about 20 ms a request). Here the pattern is a small automaton whose states are
//! the pattern positions reached so far, kept as a bit set and advanced for all positions at
//! once per character (the shift-and technique), so a match costs one pass over the text, a
//! few word operations per character, whatever the pattern.

use std::ops::{BitAnd, BitOr};

/// At most this many pattern tokens (characters, after runs of `*` are collapsed). X-Ray's
/// longest pattern field, `ResourceARN`, has 500; what is matched per request (`Host`,
/// `HTTPMethod`, `URLPath`, attribute values) has at most 128: up to 127 tokens take one
/// 128-bit word, up to 255 two.
pub const MAX_TOKENS: usize = 4 * 128 - 1;

/// A pattern too long to compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLong;

/// A set of pattern positions.
trait Bits: Copy + Eq + BitAnd<Output = Self> + BitOr<Output = Self> {
    const ZERO: Self;
    fn bit(at: usize) -> Self;
    /// Every position moved one forward.
    fn advanced(self) -> Self;
}

impl Bits for u128 {
    const ZERO: Self = 0;
    fn bit(at: usize) -> Self {
        1 << at
    }
    fn advanced(self) -> Self {
        self << 1
    }
}

/// Two 128-bit words (low, high): patterns of up to 255 tokens, spelt out because the generic
/// loop below costs many times more per character.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Pair(u128, u128);

impl BitAnd for Pair {
    type Output = Self;
    fn bitand(self, other: Self) -> Self {
        Self(self.0 & other.0, self.1 & other.1)
    }
}

impl BitOr for Pair {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0, self.1 | other.1)
    }
}

impl Bits for Pair {
    const ZERO: Self = Self(0, 0);
    fn bit(at: usize) -> Self {
        if at < 128 {
            Self(1 << at, 0)
        } else {
            Self(0, 1 << (at - 128))
        }
    }
    fn advanced(self) -> Self {
        Self(self.0 << 1, (self.1 << 1) | (self.0 >> 127))
    }
}

/// `N` 128-bit words, for patterns too long for two (only `ResourceARN`, matched once when
/// rules load).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Wide<const N: usize>([u128; N]);

impl<const N: usize> BitAnd for Wide<N> {
    type Output = Self;
    fn bitand(mut self, other: Self) -> Self {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a &= b;
        }
        self
    }
}

impl<const N: usize> BitOr for Wide<N> {
    type Output = Self;
    fn bitor(mut self, other: Self) -> Self {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
        self
    }
}

impl<const N: usize> Bits for Wide<N> {
    const ZERO: Self = Self([0; N]);
    fn bit(at: usize) -> Self {
        let mut words = [0; N];
        words[at / 128] = 1 << (at % 128);
        Self(words)
    }
    fn advanced(mut self) -> Self {
        let mut carry = 0;
        for word in self.0.iter_mut() {
            let next = *word >> 127;
            *word = (*word << 1) | carry;
            carry = next;
        }
        self
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Token {
    Star,
    One,
    Literal(char),
}

/// The automaton of one pattern: bit `i` live means the first `i` tokens have matched.
#[derive(Debug, Clone, PartialEq)]
struct Automaton<B> {
    /// The live set before any character (the start, and past any leading `*`).
    start: B,
    accept: B,
    /// Per ASCII character, the positions it advances (`?`, and the letter in either case).
    ascii: Box<[B; 128]>,
    /// Positions holding `?`: any character advances them.
    one: B,
    /// Positions holding `*`: any character keeps them, and they are passed for free.
    star: B,
    /// Non-ASCII literals and their positions (compared exactly).
    others: Vec<(char, B)>,
    /// The pattern ends in `*`: once accepted, whatever follows matches.
    open_end: bool,
}

impl<B: Bits> Automaton<B> {
    fn new(tokens: &[Token]) -> Self {
        let mut ascii = Box::new([B::ZERO; 128]);
        let (mut one, mut star) = (B::ZERO, B::ZERO);
        let mut others = Vec::new();
        for (at, token) in tokens.iter().enumerate() {
            let bit = B::bit(at);
            match token {
                Token::Star => star = star | bit,
                Token::One => one = one | bit,
                Token::Literal(c) if c.is_ascii() => {
                    for variant in [c.to_ascii_lowercase(), c.to_ascii_uppercase()] {
                        let row = &mut ascii[variant as usize];
                        *row = *row | bit;
                    }
                }
                Token::Literal(c) => others.push((*c, bit)),
            }
        }
        for row in ascii.iter_mut() {
            *row = *row | one;
        }
        let mut automaton = Self {
            start: B::ZERO,
            accept: B::bit(tokens.len()),
            ascii,
            one,
            star,
            others,
            open_end: tokens.last() == Some(&Token::Star),
        };
        automaton.start = automaton.closed(B::bit(0));
        automaton
    }

    /// Adds the positions reached by letting a `*` match nothing (runs of `*` are collapsed,
    /// so one step suffices).
    fn closed(&self, live: B) -> B {
        live | (live & self.star).advanced()
    }

    fn matches(&self, text: &str) -> bool {
        let mut live = self.start;
        for c in text.chars() {
            if self.open_end && live & self.accept != B::ZERO {
                return true;
            }
            let advance = if c.is_ascii() {
                self.ascii[c as usize]
            } else {
                self.others
                    .iter()
                    .filter(|(literal, _)| *literal == c)
                    .fold(self.one, |bits, (_, bit)| bits | *bit)
            };
            live = self.closed((live & advance).advanced() | (live & self.star));
            if live == B::ZERO {
                return false;
            }
        }
        live & self.accept != B::ZERO
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Compiled {
    /// `*`: anything, a missing value included.
    Any,
    Narrow(Automaton<u128>),
    Double(Box<Automaton<Pair>>),
    Wide(Box<Automaton<Wide<4>>>),
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Wildcard {
    compiled: Compiled,
    /// The ASCII literal characters the pattern starts with: a text without them is refused
    /// before the automaton runs (most rules fail a path within its first few bytes).
    prefix: Box<[u8]>,
}

impl Wildcard {
    pub fn compile(pattern: &str) -> Result<Self, TooLong> {
        let prefix = pattern
            .bytes()
            .take_while(|b| b.is_ascii() && !matches!(b, b'*' | b'?'))
            .collect();
        if pattern == "*" {
            return Ok(Self {
                compiled: Compiled::Any,
                prefix,
            });
        }
        let mut tokens: Vec<Token> = Vec::with_capacity(pattern.len());
        for c in pattern.chars() {
            let token = match c {
                '*' => Token::Star,
                '?' => Token::One,
                other => Token::Literal(other),
            };
            if token == Token::Star && tokens.last() == Some(&Token::Star) {
                continue;
            }
            tokens.push(token);
        }
        let compiled = if tokens.len() < 128 {
            Compiled::Narrow(Automaton::new(&tokens))
        } else if tokens.len() < 256 {
            Compiled::Double(Box::new(Automaton::new(&tokens)))
        } else if tokens.len() <= MAX_TOKENS {
            Compiled::Wide(Box::new(Automaton::new(&tokens)))
        } else {
            return Err(TooLong);
        };
        Ok(Self { compiled, prefix })
    }

    /// Whether the whole of `text` matches; a missing value matches only `*`.
    pub fn matches(&self, text: Option<&str>) -> bool {
        if let Some(text) = text
            && !text
                .as_bytes()
                .get(..self.prefix.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(&self.prefix))
        {
            return false;
        }
        match (&self.compiled, text) {
            (Compiled::Any, _) => true,
            (_, None) => false,
            (Compiled::Narrow(automaton), Some(text)) => automaton.matches(text),
            (Compiled::Double(automaton), Some(text)) => automaton.matches(text),
            (Compiled::Wide(automaton), Some(text)) => automaton.matches(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backtracking matcher this module replaced, kept as the reference its answers are
    /// compared with.
    fn reference(pattern: &str, text: Option<&str>) -> bool {
        if pattern == "*" {
            return true;
        }
        let Some(text) = text else {
            return false;
        };
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && p[pi] == '?' {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ti));
                pi += 1;
            } else if pi < p.len() && p[pi].eq_ignore_ascii_case(&t[ti]) {
                pi += 1;
                ti += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, ti));
            } else {
                return false;
            }
        }
        while pi < p.len() && p[pi] == '*' {
            pi += 1;
        }
        pi == p.len()
    }

    #[test]
    fn agrees_with_the_backtracking_matcher() {
        let patterns = [
            "",
            "*",
            "**",
            "?",
            "a",
            "A*",
            "*a",
            "*a*",
            "a*b",
            "a?c",
            "*a*b*c",
            "?*?",
            "é",
            "?é*",
            "/oauth/*",
            "/OAUTH/token/*",
            "*/status/*",
            "a**b",
            "*?",
            "ab*ab*ab",
        ];
        let texts = [
            "",
            "a",
            "A",
            "b",
            "ab",
            "abc",
            "aXc",
            "abab",
            "ababab",
            "xxaxxbxxbc",
            "é",
            "éé",
            "xé",
            "/oauth/token/dropbox",
            "/device/status/x",
            "aabb",
            "ba",
        ];
        for pattern in patterns {
            let compiled = Wildcard::compile(pattern).unwrap();
            for text in texts {
                assert_eq!(
                    compiled.matches(Some(text)),
                    reference(pattern, Some(text)),
                    "{pattern:?} against {text:?}"
                );
            }
            assert_eq!(compiled.matches(None), pattern == "*", "{pattern:?}");
        }
    }

    #[test]
    fn long_patterns_span_several_words() {
        let pattern = format!("{}*{}", "a".repeat(100), "b".repeat(100));
        let w = Wildcard::compile(&pattern).unwrap();
        assert!(w.matches(Some(&format!("{}xyz{}", "a".repeat(100), "b".repeat(100)))));
        assert!(!w.matches(Some(&format!("{}xyz{}", "a".repeat(100), "b".repeat(99)))));
        let arn = "arn:aws:ecs:eu-west-1:123456789012:container/".to_owned() + &"x".repeat(440);
        assert!(Wildcard::compile(&arn).unwrap().matches(Some(&arn)));
        assert_eq!(Wildcard::compile(&"x".repeat(MAX_TOKENS + 1)), Err(TooLong));
    }

    /// The worst case of the former matcher (every `*` retried at every position) answers
    /// the same here in one pass.
    #[test]
    fn star_heavy_patterns_against_long_texts() {
        let pattern = "*a".repeat(64) + "b";
        let text = "a".repeat(2048);
        assert!(!Wildcard::compile(&pattern).unwrap().matches(Some(&text)));
        assert!(
            Wildcard::compile(&pattern)
                .unwrap()
                .matches(Some(&(text + "b")))
        );
    }
}
