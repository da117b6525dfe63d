//! Wildcard matching, shared by the `--allowed-hosts` patterns (`*`) and the `LIKE`/`ILIKE`
//! comparisons of the tracking searches (`%`, `_`).

/// Does `text` match `pattern`? `any_run` matches any run of items (none too); `any_one`, when
/// given, matches exactly one; every other item matches itself. A wildcard in the pattern is
/// always a wildcard, also where the text holds the same character.
///
/// The classic backtrack-to-the-last-run matcher: no allocation, no recursion, at worst
/// O(|pattern|·|text|) steps (both bounded by the request that carries them).
pub fn matches<T: PartialEq + Copy>(pattern: &[T], text: &[T], any_run: T, any_one: Option<T>) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < text.len() {
        if pi < pattern.len() && pattern[pi] == any_run {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < pattern.len() && (Some(pattern[pi]) == any_one || pattern[pi] == text[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[pi..].iter().all(|&c| c == any_run)
}

#[cfg(test)]
mod tests {
    use super::matches;

    fn glob(p: &str, t: &str) -> bool {
        matches(p.as_bytes(), t.as_bytes(), b'*', None)
    }

    fn like(p: &str, t: &str) -> bool {
        let (p, t): (Vec<char>, Vec<char>) = (p.chars().collect(), t.chars().collect());
        matches(&p, &t, '%', Some('_'))
    }

    #[test]
    fn runs_ones_and_literals() {
        assert!(glob("a*c", "abbbc") && glob("*", "") && glob("a**", "a") && glob("*.example.com", "x.example.com"));
        assert!(!glob("a*c", "abcd") && !glob("*.x", "x") && !glob("a", ""));
        assert!(like("ir%", "iris-onnx") && like("i_is", "iris") && like("%b%c", "abcabc"));
        assert!(!like("i_is", "iis") && !like("ir%", "Iris"));
        // A wildcard stays one where the text has the same character (SQL: 'a%' matches 'a%x').
        assert!(like("a%", "a%x") && like("a_", "a_") && like("%é", "café"));
        // The worst case stays quadratic, not exponential.
        let text = "a".repeat(2000);
        assert!(!like(&format!("{}b", "%a".repeat(200)), &text));
    }
}
