//! DNS labels from task and framework names, with Mesos-DNS's rules (pure).
//!
//! A label keeps `a-z`, `0-9` and `-` (letters lowercased; `.` and `_` become
//! `-`; everything else is dropped), starts with a letter or digit (RFC 1123)
//! or a letter (RFC 952), never ends with `-`, and is at most 63 (RFC 1123) or
//! 24 (RFC 952) characters. When the name is too long, a run of dashes is
//! kept only if it fits together with the character after it; otherwise the
//! run is dropped and letters and digits keep filling the label. A domain
//! fragment applies the label rule to each dot-separated part and drops the
//! empty ones.

/// Which hostname rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelRule {
    /// RFC 1123: starts with a letter or digit, at most 63 characters.
    Rfc1123,
    /// RFC 952: starts with a letter, at most 24 characters.
    Rfc952,
}

impl LabelRule {
    fn max_len(self) -> usize {
        match self {
            LabelRule::Rfc1123 => 63,
            LabelRule::Rfc952 => 24,
        }
    }

    fn may_start_with(self, c: char) -> bool {
        match self {
            LabelRule::Rfc1123 => c.is_ascii_alphanumeric(),
            LabelRule::Rfc952 => c.is_ascii_alphabetic(),
        }
    }
}

impl std::str::FromStr for LabelRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "rfc1123" => Ok(LabelRule::Rfc1123),
            "rfc952" => Ok(LabelRule::Rfc952),
            other => Err(format!("unknown label rule {other:?} (rfc1123 or rfc952)")),
        }
    }
}

/// `name` as one DNS label under `rule` (may be empty).
pub fn label(name: &str, rule: LabelRule) -> String {
    // The characters a label may hold, in order.
    let chars: Vec<char> = name
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            '.' | '_' => Some('-'),
            _ => None,
        })
        .collect();
    let start = chars
        .iter()
        .position(|&c| rule.may_start_with(c))
        .unwrap_or(chars.len());
    let max = rule.max_len();
    let mut out = String::new();
    let mut i = start;
    while i < chars.len() && out.len() < max {
        if chars[i] == '-' {
            let run = chars[i..].iter().take_while(|&&c| c == '-').count();
            let followed = i + run < chars.len();
            // Keep the run only with the character after it.
            if followed && out.len() + run < max {
                out.extend(std::iter::repeat_n('-', run));
            }
            i += run;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// `name` as a dot-separated domain fragment: each part a [`label`], empty
/// parts dropped.
pub fn domain_fragment(name: &str, rule: LabelRule) -> String {
    name.split('.')
        .map(|part| label(part, rule))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Expected outputs from Mesos-DNS's own label tests (records/labels).
    const BOTH: &[(&str, &str)] = &[
        ("", ""),
        ("a", "a"),
        ("-", ""),
        ("a---", "a"),
        ("---a---", "a"),
        ("---a---b", "a---b"),
        ("a.b.c.d.e", "a-b-c-d-e"),
        ("a.c.d_de.", "a-c-d-de"),
        ("abc123", "abc123"),
        ("-abc123", "abc123"),
        ("abc123-", "abc123"),
        ("abc-123", "abc-123"),
        ("abc--123", "abc--123"),
        ("r29f.dev.angrypigs", "r29f-dev-angrypigs"),
    ];

    #[test]
    fn rfc952_labels() {
        for (input, want) in BOTH.iter().chain(&[
            ("4abc123", "abc123"),
            ("-4abc123", "abc123"),
            ("fd%gsf---gs7-f$gs--d7fddg-123", "fdgsf---gs7-fgs--d7fddg1"),
            ("89fdgsf---gs7-fgs--d7fddg-123", "fdgsf---gs7-fgs--d7fddg1"),
            (
                "89fdgsf---gs7-fgs--d7fddg---123",
                "fdgsf---gs7-fgs--d7fddg1",
            ),
            ("89fdgsf---gs7-fgs--d7fddg-", "fdgsf---gs7-fgs--d7fddg"),
            (
                "chronos with a space AND MIXED CASE-2.0.1",
                "chronoswithaspaceandmixe",
            ),
            (
                "chronos with a space AND----------MIXED--",
                "chronoswithaspaceandmixe",
            ),
            (
                "hello--------------------------------------------------------f",
                "hellof",
            ),
            (
                "hello----------------------------------------------------------f",
                "hellof",
            ),
        ]) {
            assert_eq!(label(input, LabelRule::Rfc952), *want, "{input:?}");
        }
    }

    #[test]
    fn rfc1123_labels() {
        for (input, want) in BOTH.iter().chain(&[
            ("4abc123", "4abc123"),
            ("-4abc123", "4abc123"),
            (
                "89fdgsf---gs7-fgs--d7fddg-123",
                "89fdgsf---gs7-fgs--d7fddg-123",
            ),
            (
                "89fdgsf---gs7-fgs--d7fddg---123",
                "89fdgsf---gs7-fgs--d7fddg---123",
            ),
            ("89fdgsf---gs7-fgs--d7fddg-", "89fdgsf---gs7-fgs--d7fddg"),
            (
                "fd%gsf---gs7-f$gs--d7fddg-123",
                "fdgsf---gs7-fgs--d7fddg-123",
            ),
            (
                "fd%gsf---gs7-f$gs--d7fddg123456789012345678901234567890123456789-123",
                "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891",
            ),
            (
                "$$fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789-123",
                "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891",
            ),
            (
                "%%fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789---123",
                "fdgsf---gs7-fgs--d7fddg1234567890123456789012345678901234567891",
            ),
            (
                "##fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789-",
                "fdgsf---gs7-fgs--d7fddg123456789012345678901234567890123456789",
            ),
            (
                "hello--------------------------------------------------------f",
                "hello--------------------------------------------------------f",
            ),
        ]) {
            assert_eq!(label(input, LabelRule::Rfc1123), *want, "{input:?}");
        }
    }

    #[test]
    fn domain_fragments() {
        for (input, want) in [
            ("", ""),
            (".", ""),
            ("...", ""),
            ("abc.", "abc"),
            (".a.c", "a.c"),
            ("a..c.e", "a.c.e"),
            ("space space.com", "spacespace.com"),
            ("not$1234.com", "not1234.com"),
            ("(@ host . com", "host.com"),
            ("MiXeDcase.CoM", "mixedcase.com"),
        ] {
            for rule in [LabelRule::Rfc952, LabelRule::Rfc1123] {
                assert_eq!(domain_fragment(input, rule), want, "{input:?} {rule:?}");
            }
        }
        let pod = "pod_123$abc.marathon-0.6.0-dev.mesos";
        assert_eq!(
            domain_fragment(pod, LabelRule::Rfc952),
            "pod-123abc.marathon-0.dev.mesos"
        );
        assert_eq!(
            domain_fragment(pod, LabelRule::Rfc1123),
            "pod-123abc.marathon-0.6.0-dev.mesos"
        );
    }

    proptest! {
        #[test]
        fn labels_are_always_valid(s in ".{0,100}") {
            for rule in [LabelRule::Rfc952, LabelRule::Rfc1123] {
                let l = label(&s, rule);
                prop_assert!(l.len() <= rule.max_len());
                prop_assert!(l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
                prop_assert!(!l.ends_with('-'));
                if let Some(c) = l.chars().next() {
                    prop_assert!(rule.may_start_with(c));
                }
            }
        }
    }
}
