//! The filter grammar: MLflow's search filter text → [`Clause`]s, with errors that say what
//! and where (0-based character offsets).

use super::*;

/// Identifier as written: optional entity prefix and key, quotes removed.
pub(super) struct RawIdent {
    prefix: Option<String>,
    key: String,
    key_pos: usize,
}

/// A single literal value as written.
pub(super) enum Scalar {
    Str(String),
    Num(String),
}

pub(super) enum RawValue {
    Scalar(usize, Scalar),
    List(Vec<(usize, Scalar)>),
}

pub(super) struct Parser<'a> {
    src: &'a str,
    chars: Vec<char>,
    pos: usize,
    target: Target,
}

pub(super) fn is_word_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

pub(super) fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

pub(super) fn is_key_char(c: char) -> bool {
    is_word_char(c) || c == '.'
}

pub(super) fn is_operator_char(c: char) -> bool {
    matches!(c, '=' | '!' | '<' | '>')
}

impl<'a> Parser<'a> {
    pub(super) fn new(src: &'a str, target: Target) -> Self {
        Parser { src, chars: src.chars().collect(), pos: 0, target }
    }

    fn err(&self, pos: usize, msg: impl std::fmt::Display) -> FilterError {
        FilterError::Filter(format!("Invalid filter '{}': {msg} at position {pos}", self.src))
    }

    fn or_error(&self, pos: usize) -> FilterError {
        FilterError::Filter(format!(
            "Invalid filter '{}': OR is not supported (found at position {pos}); \
             only clauses joined by AND are allowed",
            self.src
        ))
    }

    fn invalid_clause(&self, start: usize) -> FilterError {
        FilterError::Filter(format!(
            "Invalid clause(s) in filter string: {} (at position {start}; expected \
             <attribute or tags.key> <comparator> <value>)",
            self.clause_text(start)
        ))
    }

    /// Text from `start` up to the next top-level `AND` (or the end), trimmed.
    fn clause_text(&self, start: usize) -> String {
        let mut quote: Option<char> = None;
        let mut i = start;
        while i < self.chars.len() {
            let c = self.chars[i];
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if matches!(c, '\'' | '"' | '`') => quote = Some(c),
                None => {
                    let boundary = i == 0 || !is_word_char(self.chars[i - 1]);
                    if i > start && boundary {
                        if let Some((w, _)) = self.word_at(i) {
                            if w.eq_ignore_ascii_case("AND") {
                                break;
                            }
                        }
                    }
                }
            }
            i += 1;
        }
        self.chars[start..i].iter().collect::<String>().trim().to_owned()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// The word (`[alpha_][alnum_]*`) starting at `pos`, and its end.
    fn word_at(&self, pos: usize) -> Option<(String, usize)> {
        let first = *self.chars.get(pos)?;
        if !is_word_start(first) {
            return None;
        }
        let mut end = pos + 1;
        while self.chars.get(end).copied().is_some_and(is_word_char) {
            end += 1;
        }
        Some((self.chars[pos..end].iter().collect(), end))
    }

    fn take_while(&mut self, pred: impl Fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// Reads a quoted run starting at the current position (which holds `q`).
    ///
    /// A doubled quote or a backslash before a quote/backslash stands for that
    /// character; any other backslash is kept verbatim.
    fn quoted(&mut self, q: char, what: &str) -> Result<String, FilterError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.err(start, format!("unterminated {what} starting"))),
                Some(c) if c == q => {
                    if self.peek_at(1) == Some(q) {
                        out.push(q);
                        self.pos += 2;
                    } else {
                        self.pos += 1;
                        return Ok(out);
                    }
                }
                Some('\\') => match self.peek_at(1) {
                    Some(n @ ('\'' | '"' | '`' | '\\')) => {
                        out.push(n);
                        self.pos += 2;
                    }
                    _ => {
                        out.push('\\');
                        self.pos += 1;
                    }
                },
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    pub(super) fn parse_all(&mut self) -> Result<Vec<Clause>, FilterError> {
        let mut out = Vec::new();
        self.skip_ws();
        if self.at_end() {
            return Ok(out);
        }
        let mut values = 0;
        loop {
            let clause_pos = self.pos;
            let clause = self.clause()?;
            values += match &clause.value {
                ClauseValue::StrList(v) => v.len(),
                ClauseValue::IntList(v) => v.len(),
                _ => 1,
            };
            if out.len() == MAX_CLAUSES || values > MAX_VALUES {
                return Err(self.err(
                    clause_pos,
                    format!("the filter is too long (at most {MAX_CLAUSES} clauses and {MAX_VALUES} values)"),
                ));
            }
            out.push(clause);
            self.skip_ws();
            if self.at_end() {
                return Ok(out);
            }
            let here = self.pos;
            match self.word_at(here) {
                Some((w, end)) if w.eq_ignore_ascii_case("AND") => {
                    self.pos = end;
                    self.skip_ws();
                    if self.at_end() {
                        return Err(self.err(self.pos, "expected a clause after AND"));
                    }
                }
                Some((w, _)) if w.eq_ignore_ascii_case("OR") => return Err(self.or_error(here)),
                _ => {
                    return Err(self.err(
                        here,
                        format!("expected AND or the end of the filter, found '{}'", self.clause_text(here)),
                    ))
                }
            }
        }
    }

    fn clause(&mut self) -> Result<Clause, FilterError> {
        let start = self.pos;
        if let Some((w, _)) = self.word_at(start) {
            if w.eq_ignore_ascii_case("OR") {
                return Err(self.or_error(start));
            }
            if w.eq_ignore_ascii_case("AND") {
                return Err(self.err(start, "expected a clause before AND"));
            }
        }
        let Some(ident) = self.identifier()? else {
            return Err(self.invalid_clause(start));
        };
        self.skip_ws();
        let op_pos = self.pos;
        let Some(comparator) = self.comparator()? else {
            return Err(self.invalid_clause(start));
        };
        let subject = self.resolve_subject(ident, start)?;
        let allowed = subject.comparators();
        if !allowed.contains(&comparator) {
            let valid = allowed.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ");
            return Err(self.err(
                op_pos,
                format!(
                    "invalid comparator '{}' for {}; valid comparators are {valid}",
                    comparator.as_str(),
                    subject.describe()
                ),
            ));
        }
        self.skip_ws();
        let value_pos = self.pos;
        let raw = self.value(comparator)?;
        let value = self.convert_value(&subject, raw)?;
        if let (Comparator::Like | Comparator::ILike, ClauseValue::Str(p)) = (comparator, &value) {
            if p.chars().count() > MAX_PATTERN_CHARS {
                return Err(self.err(value_pos, format!("the pattern is longer than {MAX_PATTERN_CHARS} characters")));
            }
        }
        Ok(Clause { subject, comparator, value })
    }

    fn identifier(&mut self) -> Result<Option<RawIdent>, FilterError> {
        let start = self.pos;
        let first = match self.peek() {
            Some('`') => self.quoted('`', "quoted identifier")?,
            Some(c) if is_word_start(c) => self.take_while(is_word_char),
            _ => return Ok(None),
        };
        if self.peek() != Some('.') {
            return Ok(Some(RawIdent { prefix: None, key: first, key_pos: start }));
        }
        self.pos += 1;
        let key_pos = self.pos;
        let key = match self.peek() {
            Some(q @ ('`' | '"' | '\'')) => self.quoted(q, "quoted identifier")?,
            Some(c) if is_key_char(c) => self.take_while(is_key_char),
            _ => return Err(self.err(key_pos, format!("expected a key after '{first}.'"))),
        };
        Ok(Some(RawIdent { prefix: Some(first), key, key_pos }))
    }

    fn valid_keys(&self) -> String {
        let mut keys: Vec<&str> = self.target.attributes().iter().map(|a| a.as_str()).collect();
        keys.push("tags.<key>");
        keys.join(", ")
    }

    fn resolve_subject(&self, ident: RawIdent, start: usize) -> Result<Subject, FilterError> {
        let is_tag = match ident.prefix.as_deref() {
            None => false,
            Some(p) if p.eq_ignore_ascii_case("tag") || p.eq_ignore_ascii_case("tags") => true,
            Some(p) if ["attribute", "attributes", "attr"].iter().any(|a| p.eq_ignore_ascii_case(a)) => false,
            Some(p) => {
                return Err(self.err(
                    start,
                    format!(
                        "invalid entity type '{p}'; valid entity types are attribute \
                         (or attributes) and tag (or tags)"
                    ),
                ))
            }
        };
        if is_tag {
            if ident.key.is_empty() {
                return Err(self.err(ident.key_pos, "tag key must not be empty"));
            }
            return Ok(Subject::Tag(ident.key));
        }
        self.target.attributes().iter().find(|a| a.as_str() == ident.key).map(|a| Subject::Attribute(*a)).ok_or_else(
            || {
                self.err(
                    ident.key_pos,
                    format!("invalid attribute key '{}'; valid keys are {}", ident.key, self.valid_keys()),
                )
            },
        )
    }

    fn comparator(&mut self) -> Result<Option<Comparator>, FilterError> {
        let start = self.pos;
        match self.peek() {
            Some(c) if is_operator_char(c) => {
                let sym = self.take_while(is_operator_char);
                let op = match sym.as_str() {
                    "=" => Comparator::Eq,
                    "!=" | "<>" => Comparator::Ne,
                    "<" => Comparator::Lt,
                    "<=" => Comparator::Le,
                    ">" => Comparator::Gt,
                    ">=" => Comparator::Ge,
                    _ => {
                        return Err(self.err(
                            start,
                            format!(
                                "unknown comparator '{sym}'; valid comparators are =, !=, <, \
                                 <=, >, >=, LIKE, ILIKE, IN, NOT IN"
                            ),
                        ))
                    }
                };
                Ok(Some(op))
            }
            Some(_) => {
                let Some((word, end)) = self.word_at(start) else {
                    return Ok(None);
                };
                let op = match word.to_ascii_uppercase().as_str() {
                    "LIKE" => Comparator::Like,
                    "ILIKE" => Comparator::ILike,
                    "IN" => Comparator::In,
                    "NOT" => {
                        self.pos = end;
                        self.skip_ws();
                        return match self.word_at(self.pos) {
                            Some((w, e)) if w.eq_ignore_ascii_case("IN") => {
                                self.pos = e;
                                Ok(Some(Comparator::NotIn))
                            }
                            _ => {
                                Err(self.err(self.pos, "expected IN after NOT (NOT IN is the only negated comparator)"))
                            }
                        };
                    }
                    _ => return Ok(None),
                };
                self.pos = end;
                Ok(Some(op))
            }
            None => Ok(None),
        }
    }

    fn value(&mut self, comparator: Comparator) -> Result<RawValue, FilterError> {
        let pos = self.pos;
        if !comparator.is_list() {
            return match self.scalar()? {
                Some(s) => Ok(RawValue::Scalar(pos, s)),
                None => Err(self.err(pos, format!("expected a value after '{}'", comparator.as_str()))),
            };
        }
        if self.peek() != Some('(') {
            return Err(self.err(
                pos,
                format!("expected a parenthesized list of values after '{}', e.g. ('a', 'b')", comparator.as_str()),
            ));
        }
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            let item_pos = self.pos;
            if self.peek() == Some(')') && items.is_empty() {
                return Err(self.err(
                    item_pos,
                    format!("expected at least one value in the list after '{}'", comparator.as_str()),
                ));
            }
            match self.scalar()? {
                Some(s) => items.push((item_pos, s)),
                None => return Err(self.err(item_pos, "expected a value in the list")),
            }
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(RawValue::List(items));
                }
                None => return Err(self.err(self.pos, "unterminated list, expected ')'")),
                Some(_) => return Err(self.err(self.pos, "expected ',' or ')' in the list")),
            }
        }
    }

    fn scalar(&mut self) -> Result<Option<Scalar>, FilterError> {
        let pos = self.pos;
        match self.peek() {
            Some(q @ ('\'' | '"')) => Ok(Some(Scalar::Str(self.quoted(q, "string")?))),
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' => {
                self.pos += 1;
                let rest = self.take_while(|c| c.is_alphanumeric() || c == '.');
                Ok(Some(Scalar::Num(format!("{c}{rest}"))))
            }
            Some(c) if is_word_start(c) || c == '`' => {
                let word = if c == '`' { self.quoted('`', "quoted identifier")? } else { self.take_while(is_key_char) };
                Err(self.err(
                    pos,
                    format!(
                        "expected a quoted string value, found '{word}'; \
                         use single or double quotes"
                    ),
                ))
            }
            _ => Ok(None),
        }
    }

    fn convert_value(&self, subject: &Subject, raw: RawValue) -> Result<ClauseValue, FilterError> {
        let numeric = matches!(subject, Subject::Attribute(Attribute::VersionNumber));
        match raw {
            RawValue::Scalar(pos, s) if numeric => self.int_value(pos, s).map(ClauseValue::Int),
            RawValue::Scalar(pos, s) => self.str_value(pos, subject, s).map(ClauseValue::Str),
            RawValue::List(items) if numeric => items
                .into_iter()
                .map(|(pos, s)| self.int_value(pos, s))
                .collect::<Result<_, _>>()
                .map(ClauseValue::IntList),
            RawValue::List(items) => items
                .into_iter()
                .map(|(pos, s)| self.str_value(pos, subject, s))
                .collect::<Result<_, _>>()
                .map(ClauseValue::StrList),
        }
    }

    fn int_value(&self, pos: usize, s: Scalar) -> Result<i64, FilterError> {
        let text = match s {
            Scalar::Str(t) | Scalar::Num(t) => t,
        };
        text.parse::<i64>()
            .map_err(|_| self.err(pos, format!("expected an integer value for 'version_number', found '{text}'")))
    }

    fn str_value(&self, pos: usize, subject: &Subject, s: Scalar) -> Result<String, FilterError> {
        match s {
            Scalar::Str(t) => Ok(t),
            Scalar::Num(n) => {
                Err(self.err(pos, format!("expected a quoted string value for {}, found {n}", subject.describe())))
            }
        }
    }
}
