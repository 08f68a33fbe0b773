//! The filter language: the subset of AIP-160 a data user needs, parsed once
//! (by the gateway) into the typed [`FilterExpr`] tree that nodes execute.
//!
//! Grammar, following AIP-160 (note that `OR` binds tighter than `AND`, and
//! that juxtaposed terms form a sequence, an implicit `AND` that binds
//! between the two):
//!
//! ```text
//! expression  = sequence { "AND" sequence }
//! sequence    = factor { factor }
//! factor      = term { "OR" term }
//! term        = ( "NOT" | "-" ) term | "(" expression ")" | restriction
//! restriction = field ( "=" | "!=" | "<" | "<=" | ">" | ">=" | ":" ) literal
//! ```
//!
//! Literals are typed by the field they are compared with, so `region =
//! 320000` compares a string and `aqi = 100` an integer.

use std::collections::BTreeSet;

use yrd_proto::datetime;
use yrd_proto::mesh::{CompareOp, Comparison, FilterExpr, FilterList, Value, filter_expr, value};
use yrd_proto::schema::{DatasetSchema, FieldSchema, FieldType};

use crate::limits::MAX_FILTER_DEPTH_BOUND;
use crate::{Limits, QueryError};

/// The deepest tree a recursive walk over a typed filter descends into
/// (here [`regions_matched`], and the node's SQL builder): room for a
/// checked filter (at most [`MAX_FILTER_DEPTH_BOUND`] deep) inside the row
/// scopes a node ANDs around it, with plenty to spare. A walk refuses (or,
/// where refusing is not needed, gives up on) anything deeper rather than
/// recursing into it; the other walks here are iterative.
pub const MAX_TREE_DEPTH: usize = 2 * MAX_FILTER_DEPTH_BOUND;

/// The request parameter of filter text.
const TEXT_PARAM: &str = "filter";
/// The request parameter of a typed filter tree.
const TREE_PARAM: &str = "filter_expr";
/// The longest excerpt of the input quoted in a syntax error.
const EXCERPT_CHARS: usize = 24;

/// A literal as written: its text with escapes resolved, and how it was
/// written, which decides how it may be typed.
#[derive(Debug)]
struct Literal {
    /// The value, quotes removed and escapes resolved.
    text: String,
    /// Whether it was quoted (quoted literals are never numbers or booleans).
    quoted: bool,
    /// Whether it ends in a `*` that was not escaped (a prefix for `:`).
    trailing_star: bool,
    /// The source text, for error messages.
    raw: String,
}

/// A recursive-descent parser over the characters of a filter; positions
/// are character indexes so that errors point where a user counts.
///
/// It recurses only into a parenthesis or a negation, and
/// [`enter`](Parser::enter) checks the nesting against the depth limit
/// (never more than [`MAX_FILTER_DEPTH_BOUND`]) before each such step, so
/// its stack use is bounded whatever the input.
struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    schema: &'a DatasetSchema,
    limits: &'a Limits,
    /// Current nesting of parentheses and negations, bounded so that
    /// hostile input cannot exhaust the stack.
    nesting: usize,
    /// Comparisons read so far, bounded by `max_filter_terms` as they are
    /// read, so that a long flat filter stops early too.
    terms: usize,
}

/// Parses filter text against a dataset's schema. Empty or whitespace-only
/// text is no filter (`Ok(None)`).
pub fn parse_filter(text: &str, schema: &DatasetSchema, limits: &Limits) -> Result<Option<FilterExpr>, QueryError> {
    // Checked before anything else so that a huge input costs nothing.
    Limits::check(TEXT_PARAM, "max_filter_length", limits.max_filter_length, text.len())?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    // A cheap scan before parsing: parentheses nested deeper than the limit
    // are refused without building anything (the parser checks the nesting
    // of negations, and again of parentheses, as it goes).
    let parens = paren_depth(text);
    Limits::check(TEXT_PARAM, "max_filter_depth", limits.filter_depth(), parens)?;
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
        schema,
        limits,
        nesting: 0,
        terms: 0,
    };
    let expr = parser.expression()?;
    parser.skip_whitespace();
    if parser.pos < parser.chars.len() {
        // An expression only stops early at `)`, so this is an unmatched one.
        let found = parser.describe(parser.pos);
        return Err(parser.error(parser.pos, format!("found {found} without a matching `(`")));
    }
    check_shape(&expr, TEXT_PARAM, limits)?;
    Ok(Some(expr))
}

/// Validates a typed filter tree received over the wire: every node is
/// set, lists are not empty, fields exist and may be filtered, values have
/// the field's type, and the tree is within the depth and term limits.
pub fn check_filter(expr: &FilterExpr, schema: &DatasetSchema, limits: &Limits) -> Result<(), QueryError> {
    check_shape(expr, TREE_PARAM, limits)?;
    check_node(expr, schema)
}

/// The canonical text of a filter, which [`parse_filter`] parses back to an
/// equal tree for any tree it produced. Written without recursion, so any
/// tree can be printed.
pub fn to_text(expr: &FilterExpr) -> String {
    let mut out = String::new();
    // What is still to be written, the next piece last.
    let mut work = vec![Piece::Expr(expr)];
    while let Some(piece) = work.pop() {
        let expr = match piece {
            Piece::Text(text) => {
                out.push_str(text);
                continue;
            }
            Piece::Expr(expr) => expr,
        };
        match &expr.kind {
            None => {}
            Some(filter_expr::Kind::Comparison(c)) => write_comparison(&mut out, c),
            Some(filter_expr::Kind::And(list) | filter_expr::Kind::Or(list)) => {
                let joiner = if matches!(expr.kind, Some(filter_expr::Kind::And(_))) {
                    " AND "
                } else {
                    " OR "
                };
                for (i, operand) in list.exprs.iter().enumerate().rev() {
                    // In an AND, an OR operand would bind correctly without
                    // parentheses (OR binds tighter), but few readers know
                    // that.
                    let wrap = matches!(operand.kind, Some(filter_expr::Kind::And(_) | filter_expr::Kind::Or(_)));
                    push_operand(&mut work, operand, wrap);
                    if i > 0 {
                        work.push(Piece::Text(joiner));
                    }
                }
            }
            Some(filter_expr::Kind::Not(inner)) => {
                // Only a list needs parentheses (`NOT NOT a` is two
                // negations), so the text nests no deeper than the tree and
                // parses back within the same depth limit.
                let wrap = matches!(inner.kind, Some(filter_expr::Kind::And(_) | filter_expr::Kind::Or(_)));
                push_operand(&mut work, inner, wrap);
                work.push(Piece::Text("NOT "));
            }
        }
    }
    out
}

/// A piece of [`to_text`]'s output still to be written.
enum Piece<'a> {
    /// A subtree.
    Expr(&'a FilterExpr),
    /// Fixed text: a keyword or a parenthesis.
    Text(&'static str),
}

/// Queues an operand, in parentheses when `wrap`.
fn push_operand<'a>(work: &mut Vec<Piece<'a>>, expr: &'a FilterExpr, wrap: bool) {
    if wrap {
        work.push(Piece::Text(")"));
        work.push(Piece::Expr(expr));
        work.push(Piece::Text("("));
    } else {
        work.push(Piece::Expr(expr));
    }
}

/// The region codes a filter can match, when it constrains `region_field`
/// by equality (`region = "320000"`, ORs of those, ANDs intersecting); `None`
/// when the filter does not restrict regions, or when that is not certain
/// (also for a tree deeper than [`MAX_TREE_DEPTH`], which it does not
/// descend into).
pub fn regions_matched(expr: &FilterExpr, region_field: &str) -> Option<BTreeSet<String>> {
    regions_within(expr, region_field, 0)
}

/// [`regions_matched`] of a subtree `depth` levels down.
fn regions_within(expr: &FilterExpr, region_field: &str, depth: usize) -> Option<BTreeSet<String>> {
    if depth > MAX_TREE_DEPTH {
        return None;
    }
    match expr.kind.as_ref()? {
        filter_expr::Kind::Comparison(c) => {
            let op = CompareOp::try_from(c.op).ok()?;
            let equality = op == CompareOp::Eq || (op == CompareOp::Has && !c.prefix);
            match c.value.as_ref().and_then(|v| v.kind.as_ref()) {
                Some(value::Kind::StringValue(code)) if equality && c.field == region_field => {
                    Some(BTreeSet::from([code.clone()]))
                }
                _ => None,
            }
        }
        filter_expr::Kind::And(list) => {
            // Every operand must hold, so each constraint narrows the set;
            // unconstrained operands narrow nothing.
            let mut result: Option<BTreeSet<String>> = None;
            for set in list
                .exprs
                .iter()
                .filter_map(|e| regions_within(e, region_field, depth + 1))
            {
                result = Some(match result {
                    None => set,
                    Some(acc) => acc.intersection(&set).cloned().collect(),
                });
            }
            result
        }
        filter_expr::Kind::Or(list) => {
            // One unconstrained operand lets any region through.
            let mut result = BTreeSet::new();
            for e in &list.exprs {
                result.extend(regions_within(e, region_field, depth + 1)?);
            }
            (!list.exprs.is_empty()).then_some(result)
        }
        // A negation matches every region but the ones named, which are not
        // known here.
        filter_expr::Kind::Not(_) => None,
    }
}

impl Parser<'_> {
    fn error(&self, at: usize, message: String) -> QueryError {
        QueryError::Syntax {
            param: TEXT_PARAM,
            position: at + 1,
            message,
        }
    }

    /// The input at `at`, quoted, for "found ..." in messages.
    fn describe(&self, at: usize) -> String {
        let Some(&first) = self.chars.get(at) else {
            return "end of filter".to_owned();
        };
        let end = if matches!(first, '(' | ')') {
            at + 1
        } else {
            let len = self.chars[at..]
                .iter()
                .take_while(|c| !c.is_whitespace() && !matches!(c, '(' | ')'))
                .count();
            at + len.max(1)
        };
        let excerpt: String = self.chars[at..end].iter().take(EXCERPT_CHARS).collect();
        let ellipsis = if end - at > EXCERPT_CHARS { "…" } else { "" };
        format!("`{excerpt}{ellipsis}`")
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Whether the input at the cursor is the (uppercase) keyword, as a
    /// whole word: `ANDROID` is a field, not `AND`.
    fn at_keyword(&self, keyword: &str) -> bool {
        let len = keyword.chars().count();
        self.chars.len() >= self.pos + len
            && self.chars[self.pos..self.pos + len].iter().copied().eq(keyword.chars())
            && !self.chars.get(self.pos + len).copied().is_some_and(is_field_char)
    }

    fn at_any_keyword(&self) -> Option<&'static str> {
        ["AND", "OR", "NOT"].into_iter().find(|k| self.at_keyword(k))
    }

    /// One level deeper: checked before the parser recurses into it.
    fn enter(&mut self) -> Result<(), QueryError> {
        self.nesting += 1;
        Limits::check(TEXT_PARAM, "max_filter_depth", self.limits.filter_depth(), self.nesting)
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    fn expression(&mut self) -> Result<FilterExpr, QueryError> {
        let mut operands = vec![self.sequence()?];
        loop {
            self.skip_whitespace();
            if !self.at_keyword("AND") {
                return Ok(join(operands, List::And));
            }
            self.pos += 3;
            operands.push(self.sequence()?);
        }
    }

    fn sequence(&mut self) -> Result<FilterExpr, QueryError> {
        let mut operands = vec![self.factor()?];
        loop {
            self.skip_whitespace();
            // Anything else starts another factor; term() reports it if it
            // cannot.
            if matches!(self.peek(), None | Some(')')) || self.at_keyword("AND") {
                return Ok(join(operands, List::And));
            }
            operands.push(self.factor()?);
        }
    }

    fn factor(&mut self) -> Result<FilterExpr, QueryError> {
        let mut operands = vec![self.term()?];
        loop {
            self.skip_whitespace();
            if !self.at_keyword("OR") {
                return Ok(join(operands, List::Or));
            }
            self.pos += 2;
            operands.push(self.term()?);
        }
    }

    fn term(&mut self) -> Result<FilterExpr, QueryError> {
        self.skip_whitespace();
        let negation = if self.at_keyword("NOT") {
            Some(3)
        } else if self.peek() == Some('-') {
            Some(1)
        } else {
            None
        };
        if let Some(len) = negation {
            self.pos += len;
            self.enter()?;
            let operand = self.term()?;
            self.leave();
            return Ok(FilterExpr {
                kind: Some(filter_expr::Kind::Not(Box::new(operand))),
            });
        }
        match self.peek() {
            Some('(') => {
                let open = self.pos;
                self.pos += 1;
                self.enter()?;
                let inner = self.expression()?;
                self.skip_whitespace();
                if self.peek() != Some(')') {
                    let found = self.describe(self.pos);
                    return Err(self.error(
                        self.pos,
                        format!("expected `)` to close the `(` at character {}, found {found}", open + 1),
                    ));
                }
                self.pos += 1;
                self.leave();
                Ok(inner)
            }
            Some(c) if is_field_start(c) && self.at_any_keyword().is_none() => self.restriction(),
            _ => {
                let found = self.describe(self.pos);
                Err(self.error(
                    self.pos,
                    format!("expected a field name, `(`, NOT or `-`, found {found}"),
                ))
            }
        }
    }

    fn restriction(&mut self) -> Result<FilterExpr, QueryError> {
        self.terms += 1;
        Limits::check(TEXT_PARAM, "max_filter_terms", self.limits.max_filter_terms, self.terms)?;
        let start = self.pos;
        while self.peek().is_some_and(is_field_char) {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        let field = filterable_field(TEXT_PARAM, &name, self.schema)?;
        self.skip_whitespace();
        let (op, spelling) = self.comparator(&name)?;
        self.skip_whitespace();
        let literal = self.literal(spelling)?;
        let mismatch = || QueryError::TypeMismatch {
            param: TEXT_PARAM,
            field: name.clone(),
            expected: field.ty.name(),
            found: literal.raw.clone(),
        };
        let stripped = literal.text.strip_suffix('*').filter(|_| literal.trailing_star);
        let (text, prefix) = match stripped {
            Some(text) if op == CompareOp::Has && field.ty == FieldType::String => (text, true),
            _ => (literal.text.as_str(), false),
        };
        let kind = typed_value(field.ty, text, literal.quoted).ok_or_else(mismatch)?;
        Ok(FilterExpr {
            kind: Some(filter_expr::Kind::Comparison(Comparison {
                field: name,
                op: op as i32,
                value: Some(Value { kind: Some(kind) }),
                prefix,
            })),
        })
    }

    /// Reads a comparison operator, returning it with its spelling.
    fn comparator(&mut self, field: &str) -> Result<(CompareOp, &'static str), QueryError> {
        let next = self.chars.get(self.pos + 1).copied();
        let (op, text) = match (self.peek(), next) {
            (Some('<'), Some('=')) => (CompareOp::Le, "<="),
            (Some('>'), Some('=')) => (CompareOp::Ge, ">="),
            (Some('!'), Some('=')) => (CompareOp::Ne, "!="),
            (Some('<'), _) => (CompareOp::Lt, "<"),
            (Some('>'), _) => (CompareOp::Gt, ">"),
            (Some('='), _) => (CompareOp::Eq, "="),
            (Some(':'), _) => (CompareOp::Has, ":"),
            _ => {
                let found = self.describe(self.pos);
                return Err(self.error(
                    self.pos,
                    format!("expected a comparison operator (=, !=, <, <=, >, >=, :) after `{field}`, found {found}"),
                ));
            }
        };
        self.pos += text.len();
        Ok((op, text))
    }

    fn literal(&mut self, op: &str) -> Result<Literal, QueryError> {
        let start = self.pos;
        match self.peek() {
            Some(quote @ ('"' | '\'')) => self.quoted(quote),
            Some(c) if !matches!(c, '(' | ')') && self.at_any_keyword().is_none() => {
                while self
                    .peek()
                    .is_some_and(|c| !c.is_whitespace() && !matches!(c, '(' | ')' | '"' | '\''))
                {
                    self.pos += 1;
                }
                let raw: String = self.chars[start..self.pos].iter().collect();
                Ok(Literal {
                    trailing_star: raw.ends_with('*'),
                    text: raw.clone(),
                    quoted: false,
                    raw,
                })
            }
            _ => {
                let found = self.describe(self.pos);
                Err(self.error(self.pos, format!("expected a value after `{op}`, found {found}")))
            }
        }
    }

    fn quoted(&mut self, quote: char) -> Result<Literal, QueryError> {
        let start = self.pos;
        self.pos += 1;
        let unterminated = |parser: &Self| {
            parser.error(
                start,
                format!(
                    "unterminated string: no closing {quote} for the one at character {}",
                    start + 1
                ),
            )
        };
        let mut text = String::new();
        // A trailing `\*` is a literal star, not a prefix wildcard.
        let mut last_escaped = false;
        loop {
            match self.peek() {
                None => return Err(unterminated(self)),
                Some(c) if c == quote => break,
                Some('\\') => {
                    let escaped = self.chars.get(self.pos + 1).copied();
                    match escaped {
                        Some(c @ ('"' | '\'' | '\\' | '*')) => text.push(c),
                        Some(other) => {
                            return Err(self.error(
                                self.pos,
                                format!("unknown escape `\\{other}`: a string may escape only \\\" \\' \\\\ and \\*"),
                            ));
                        }
                        None => return Err(unterminated(self)),
                    }
                    self.pos += 2;
                    last_escaped = true;
                }
                Some(c) => {
                    text.push(c);
                    self.pos += 1;
                    last_escaped = false;
                }
            }
        }
        self.pos += 1;
        let raw = self.chars[start..self.pos].iter().collect();
        Ok(Literal {
            trailing_star: text.ends_with('*') && !last_escaped,
            text,
            quoted: true,
            raw,
        })
    }
}

/// Which list an operand sequence is joined into.
#[derive(Clone, Copy)]
enum List {
    And,
    Or,
}

/// Joins operands, flattening nested lists of the same kind; one operand is
/// returned as it is.
fn join(mut operands: Vec<FilterExpr>, list: List) -> FilterExpr {
    if operands.len() == 1
        && let Some(only) = operands.pop()
    {
        return only;
    }
    let mut flat = Vec::with_capacity(operands.len());
    for operand in operands {
        match (list, operand.kind) {
            (List::And, Some(filter_expr::Kind::And(inner))) | (List::Or, Some(filter_expr::Kind::Or(inner))) => {
                flat.extend(inner.exprs);
            }
            (_, kind) => flat.push(FilterExpr { kind }),
        }
    }
    let joined = FilterList { exprs: flat };
    FilterExpr {
        kind: Some(match list {
            List::And => filter_expr::Kind::And(joined),
            List::Or => filter_expr::Kind::Or(joined),
        }),
    }
}

fn is_field_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_field_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

/// The field called `name`, if it exists and may be filtered.
fn filterable_field<'s>(
    param: &'static str,
    name: &str,
    schema: &'s DatasetSchema,
) -> Result<&'s FieldSchema, QueryError> {
    let (_, field) = schema.field(name).ok_or_else(|| QueryError::UnknownField {
        param,
        dataset: schema.id.clone(),
        field: name.to_owned(),
    })?;
    if !field.filterable {
        return Err(QueryError::FieldNotAllowed {
            param,
            field: name.to_owned(),
            reason: "may not be filtered".into(),
        });
    }
    Ok(field)
}

/// Types a literal for a field of type `ty`, or `None` if it does not fit.
/// Numbers and booleans must be written bare; strings, dates and
/// timestamps may be quoted or not.
fn typed_value(ty: FieldType, text: &str, quoted: bool) -> Option<value::Kind> {
    match ty {
        FieldType::String => Some(value::Kind::StringValue(text.to_owned())),
        FieldType::Int if !quoted && is_integer(text) => text.parse().ok().map(value::Kind::IntValue),
        FieldType::Double if !quoted && is_number(text) => text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(value::Kind::DoubleValue),
        FieldType::Bool if !quoted => match text {
            "true" => Some(value::Kind::BoolValue(true)),
            "false" => Some(value::Kind::BoolValue(false)),
            _ => None,
        },
        FieldType::Timestamp => datetime::parse_timestamp(text)
            .map(|seconds| value::Kind::TimestampValue(prost_types::Timestamp { seconds, nanos: 0 })),
        FieldType::Date => datetime::parse_date(text).map(|date| value::Kind::DateValue(date.to_string())),
        FieldType::Int | FieldType::Double | FieldType::Bool => None,
    }
}

/// `-?[0-9]+`
fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `-?(D+(.D*)?|.D+)([eE][+-]?D+)?`: checked by hand because Rust's float
/// parser also accepts `inf`, `NaN` and a leading `+`.
fn is_number(text: &str) -> bool {
    let rest = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((w, f)) => (w, f),
        None => (mantissa, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = (!whole.is_empty() || !fraction.is_empty()) && all_digits(whole) && all_digits(fraction);
    let exponent_ok = exponent.is_none_or(|e| {
        let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
        !digits.is_empty() && all_digits(digits)
    });
    mantissa_ok && exponent_ok
}

/// The deepest nesting of parentheses in filter text, outside quoted
/// strings (read as the parser reads them: a backslash escapes the next
/// character). Unbalanced parentheses are left to the parser to report.
fn paren_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' => depth = depth.saturating_sub(1),
            '"' | '\'' => {
                // To the closing quote; an unterminated string ends the scan.
                loop {
                    match chars.next() {
                        None => return deepest,
                        Some('\\') => {
                            chars.next();
                        }
                        Some(q) if q == c => break,
                        Some(_) => {}
                    }
                }
            }
            _ => {}
        }
    }
    deepest
}

/// The shape of a tree: its depth (AND, OR and NOT nodes on the deepest
/// path) and its number of comparisons. Measured without recursion, so a
/// tree of any depth is measured (and refused) before anything recurses
/// into it.
fn shape(expr: &FilterExpr) -> (usize, usize) {
    let (mut deepest, mut terms) = (0, 0);
    let mut stack = vec![(expr, 0usize)];
    while let Some((expr, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match &expr.kind {
            None => {}
            Some(filter_expr::Kind::Comparison(_)) => terms += 1,
            Some(filter_expr::Kind::And(list) | filter_expr::Kind::Or(list)) => {
                stack.extend(list.exprs.iter().map(|e| (e, depth + 1)));
                // An empty list still counts as a level.
                deepest = deepest.max(depth + 1);
            }
            Some(filter_expr::Kind::Not(inner)) => stack.push((inner, depth + 1)),
        }
    }
    (deepest, terms)
}

fn check_shape(expr: &FilterExpr, param: &'static str, limits: &Limits) -> Result<(), QueryError> {
    let (depth, terms) = shape(expr);
    Limits::check(param, "max_filter_depth", limits.filter_depth(), depth)?;
    Limits::check(param, "max_filter_terms", limits.max_filter_terms, terms)
}

/// Checks every node of a tree, in the order the text reads (the first
/// problem is the one reported), without recursion.
fn check_node(expr: &FilterExpr, schema: &DatasetSchema) -> Result<(), QueryError> {
    let invalid = |message: &str| QueryError::Invalid {
        param: TREE_PARAM,
        message: message.to_owned(),
    };
    let mut stack = vec![expr];
    while let Some(expr) = stack.pop() {
        match &expr.kind {
            None => return Err(invalid("an expression has none of comparison, and, or, not set")),
            Some(filter_expr::Kind::Comparison(c)) => check_comparison(c, schema)?,
            Some(filter_expr::Kind::And(list)) if list.exprs.is_empty() => {
                return Err(invalid("an AND list has no operands"));
            }
            Some(filter_expr::Kind::Or(list)) if list.exprs.is_empty() => {
                return Err(invalid("an OR list has no operands"));
            }
            Some(filter_expr::Kind::And(list) | filter_expr::Kind::Or(list)) => stack.extend(list.exprs.iter().rev()),
            Some(filter_expr::Kind::Not(inner)) => stack.push(inner),
        }
    }
    Ok(())
}

fn check_comparison(c: &Comparison, schema: &DatasetSchema) -> Result<(), QueryError> {
    let invalid = |message: String| QueryError::Invalid {
        param: TREE_PARAM,
        message,
    };
    let field = filterable_field(TREE_PARAM, &c.field, schema)?;
    let op = match CompareOp::try_from(c.op) {
        Ok(CompareOp::Unspecified) | Err(_) => {
            return Err(invalid(format!(
                "the comparison on {} has no valid operator (got {})",
                c.field, c.op
            )));
        }
        Ok(op) => op,
    };
    let Some(kind) = c.value.as_ref().and_then(|v| v.kind.as_ref()) else {
        return Err(invalid(format!("the comparison on {} has no value", c.field)));
    };
    let fits = match (field.ty, kind) {
        (FieldType::String, value::Kind::StringValue(_))
        | (FieldType::Int, value::Kind::IntValue(_))
        | (FieldType::Double, value::Kind::IntValue(_))
        | (FieldType::Bool, value::Kind::BoolValue(_)) => true,
        (FieldType::Double, value::Kind::DoubleValue(v)) => v.is_finite(),
        (FieldType::Timestamp, value::Kind::TimestampValue(ts)) => (0..1_000_000_000).contains(&ts.nanos),
        (FieldType::Date, value::Kind::DateValue(d)) => datetime::parse_date(d).is_some(),
        _ => false,
    };
    if !fits {
        return Err(QueryError::TypeMismatch {
            param: TREE_PARAM,
            field: c.field.clone(),
            expected: field.ty.name(),
            found: render_kind(kind),
        });
    }
    if c.prefix && !(op == CompareOp::Has && field.ty == FieldType::String) {
        return Err(invalid(format!(
            "prefix is set on {}, but applies only to `:` on a string field",
            c.field
        )));
    }
    Ok(())
}

fn write_comparison(out: &mut String, c: &Comparison) {
    out.push_str(&c.field);
    let op = CompareOp::try_from(c.op).unwrap_or(CompareOp::Unspecified);
    out.push_str(match op {
        CompareOp::Eq => " = ",
        CompareOp::Ne => " != ",
        CompareOp::Lt => " < ",
        CompareOp::Le => " <= ",
        CompareOp::Gt => " > ",
        CompareOp::Ge => " >= ",
        CompareOp::Has => ":",
        CompareOp::Unspecified => " ? ",
    });
    match c.value.as_ref().and_then(|v| v.kind.as_ref()) {
        Some(value::Kind::StringValue(s)) if op == CompareOp::Has => {
            // After `:` an unescaped trailing star means a prefix, so every
            // star of the value is escaped and the wildcard added after.
            out.push_str(&quote(s, true, c.prefix));
        }
        Some(kind) => out.push_str(&render_kind(kind)),
        None => out.push_str("\"\""),
    }
}

/// A literal's text: strings, dates and timestamps quoted.
fn render_kind(kind: &value::Kind) -> String {
    match kind {
        value::Kind::StringValue(s) | value::Kind::DateValue(s) => quote(s, false, false),
        value::Kind::IntValue(v) => v.to_string(),
        // Display prints the shortest text that parses back to the same
        // number, and never an exponent.
        value::Kind::DoubleValue(v) => v.to_string(),
        value::Kind::BoolValue(v) => v.to_string(),
        value::Kind::TimestampValue(ts) => quote(&datetime::format_timestamp(ts.seconds), false, false),
    }
}

fn quote(s: &str, escape_stars: bool, wildcard: bool) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' || (escape_stars && c == '*') {
            out.push('\\');
        }
        out.push(c);
    }
    if wildcard {
        out.push('*');
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrd_proto::schema::Registry;

    fn schema(id: &str) -> &'static DatasetSchema {
        Registry::standard().unwrap().get(id).unwrap()
    }

    fn parse(text: &str) -> Result<Option<FilterExpr>, QueryError> {
        parse_filter(text, schema("enterprise"), &Limits::default())
    }

    fn ok(text: &str) -> FilterExpr {
        match parse(text) {
            Ok(Some(expr)) => expr,
            other => panic!("{text:?} did not parse: {other:?}"),
        }
    }

    fn err(text: &str) -> QueryError {
        match parse(text) {
            Err(e) => e,
            Ok(expr) => panic!("{text:?} parsed to {expr:?}"),
        }
    }

    fn air(text: &str) -> Result<Option<FilterExpr>, QueryError> {
        parse_filter(text, schema("air_quality"), &Limits::default())
    }

    fn cmp(field: &str, op: CompareOp, kind: value::Kind) -> FilterExpr {
        FilterExpr {
            kind: Some(filter_expr::Kind::Comparison(Comparison {
                field: field.into(),
                op: op as i32,
                value: Some(Value { kind: Some(kind) }),
                prefix: false,
            })),
        }
    }

    fn s(field: &str, v: &str) -> FilterExpr {
        cmp(field, CompareOp::Eq, value::Kind::StringValue(v.into()))
    }

    fn and(exprs: Vec<FilterExpr>) -> FilterExpr {
        FilterExpr {
            kind: Some(filter_expr::Kind::And(FilterList { exprs })),
        }
    }

    fn or(exprs: Vec<FilterExpr>) -> FilterExpr {
        FilterExpr {
            kind: Some(filter_expr::Kind::Or(FilterList { exprs })),
        }
    }

    fn not(expr: FilterExpr) -> FilterExpr {
        FilterExpr {
            kind: Some(filter_expr::Kind::Not(Box::new(expr))),
        }
    }

    fn comparison(expr: &FilterExpr) -> &Comparison {
        match &expr.kind {
            Some(filter_expr::Kind::Comparison(c)) => c,
            other => panic!("not a comparison: {other:?}"),
        }
    }

    fn syntax_at(e: &QueryError) -> usize {
        match e {
            QueryError::Syntax {
                param: "filter",
                position,
                ..
            } => *position,
            other => panic!("not a filter syntax error: {other:?}"),
        }
    }

    #[test]
    fn empty_text_is_no_filter() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("  \t\n "), Ok(None));
    }

    #[test]
    fn or_binds_tighter_than_and() {
        assert_eq!(
            ok(r#"status = "a" AND city = "b" OR city = "c""#),
            and(vec![s("status", "a"), or(vec![s("city", "b"), s("city", "c")])])
        );
        assert_eq!(
            ok(r#"status = "a" OR city = "b" AND city = "c""#),
            and(vec![or(vec![s("status", "a"), s("city", "b")]), s("city", "c")])
        );
        assert_eq!(
            ok("city = a OR city = b OR city = c"),
            or(vec![s("city", "a"), s("city", "b"), s("city", "c")])
        );
    }

    #[test]
    fn sequences_are_an_implicit_and_between_or_and_and() {
        assert_eq!(ok("city = a status = b"), and(vec![s("city", "a"), s("status", "b")]));
        assert_eq!(
            ok("city = a status = b OR status = c"),
            and(vec![s("city", "a"), or(vec![s("status", "b"), s("status", "c")])])
        );
        // Flattened: a sequence inside AND joins the same list.
        assert_eq!(
            ok("city = a AND status = b name = c"),
            and(vec![s("city", "a"), s("status", "b"), s("name", "c")])
        );
    }

    #[test]
    fn parentheses_group_and_flatten() {
        assert_eq!(
            ok("(city = a AND status = b) OR city = c"),
            or(vec![and(vec![s("city", "a"), s("status", "b")]), s("city", "c")])
        );
        assert_eq!(
            ok("city = a AND (status = b AND (name = c))"),
            and(vec![s("city", "a"), s("status", "b"), s("name", "c")])
        );
        assert_eq!(ok("((city = a))"), s("city", "a"));
        assert_eq!(ok("(city=a)(status=b)"), and(vec![s("city", "a"), s("status", "b")]));
    }

    #[test]
    fn negation() {
        assert_eq!(ok("NOT city = a"), not(s("city", "a")));
        assert_eq!(ok("-city = a"), not(s("city", "a")));
        assert_eq!(
            ok("-(city = a OR city = b)"),
            not(or(vec![s("city", "a"), s("city", "b")]))
        );
        assert_eq!(ok("NOT(city = a)"), not(s("city", "a")));
        assert_eq!(ok("NOT NOT city = a"), not(not(s("city", "a"))));
        // NOT applies to one term, and binds tighter than OR.
        assert_eq!(
            ok("NOT city = a OR city = b"),
            or(vec![not(s("city", "a")), s("city", "b")])
        );
        assert_eq!(
            ok("status = x -city = a"),
            and(vec![s("status", "x"), not(s("city", "a"))])
        );
    }

    #[test]
    fn keywords_are_uppercase_whole_words() {
        // `and` is taken for a field name.
        assert!(matches!(err("city = a and status = b"), QueryError::UnknownField { field, .. } if field == "and"));
        // NOTE is a field, not NOT.
        assert!(matches!(err("NOTE = 1"), QueryError::UnknownField { field, .. } if field == "NOTE"));
        assert_eq!(ok("city = ANDROID"), s("city", "ANDROID"));
    }

    #[test]
    fn operators() {
        let ops = [
            ("=", CompareOp::Eq),
            ("!=", CompareOp::Ne),
            ("<", CompareOp::Lt),
            ("<=", CompareOp::Le),
            (">", CompareOp::Gt),
            (">=", CompareOp::Ge),
            (":", CompareOp::Has),
        ];
        for (text, op) in ops {
            for spaced in [format!("city {text} a"), format!("city{text}a")] {
                let expr = ok(&spaced);
                assert_eq!(comparison(&expr).op, op as i32, "{spaced}");
            }
        }
    }

    #[test]
    fn string_literals() {
        assert_eq!(
            ok(r#"name = "Acme \"Steel\" \\ Co""#),
            s("name", r#"Acme "Steel" \ Co"#)
        );
        assert_eq!(ok(r"name = 'it\'s'"), s("name", "it's"));
        assert_eq!(ok("name = \"长三角 AND OR\""), s("name", "长三角 AND OR"));
        // Bare words and numbers are strings for a string field.
        assert_eq!(ok("region = 320000"), s("region", "320000"));
        assert_eq!(ok("status = true"), s("status", "true"));
        assert_eq!(ok("industry = C39"), s("industry", "C39"));
        assert_eq!(ok("name = \"\""), s("name", ""));
    }

    #[test]
    fn numbers() {
        let aqi = air("aqi >= 100").unwrap().unwrap();
        assert_eq!(
            comparison(&aqi).value.as_ref().unwrap().kind,
            Some(value::Kind::IntValue(100))
        );
        let aqi = air("aqi > -5").unwrap().unwrap();
        assert_eq!(
            comparison(&aqi).value.as_ref().unwrap().kind,
            Some(value::Kind::IntValue(-5))
        );
        for (text, expected) in [
            ("registered_capital > 1000000", 1e6),
            ("registered_capital > 1.5e6", 1.5e6),
            ("registered_capital > -2.5", -2.5),
            ("registered_capital > .5", 0.5),
            ("registered_capital > 3.", 3.0),
            ("registered_capital > 1E-3", 1e-3),
        ] {
            let expr = ok(text);
            assert_eq!(
                comparison(&expr).value.as_ref().unwrap().kind,
                Some(value::Kind::DoubleValue(expected)),
                "{text}"
            );
        }
    }

    #[test]
    fn number_type_mismatches() {
        for text in [
            "aqi = 1.5",
            "aqi = 1e3",
            "aqi = \"100\"",
            "aqi = high",
            "aqi = 99999999999999999999",
            "aqi = --1",
        ] {
            match air(text) {
                Err(QueryError::TypeMismatch {
                    param: "filter",
                    field,
                    expected: "integer",
                    found,
                }) => {
                    assert_eq!(field, "aqi");
                    assert_eq!(found, text["aqi = ".len()..], "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        for text in [
            "registered_capital = inf",
            "registered_capital = NaN",
            "registered_capital = +1",
            "registered_capital = 1e999",
            "registered_capital = 1e",
            "registered_capital = .",
            "registered_capital = '5'",
        ] {
            assert!(
                matches!(err(text), QueryError::TypeMismatch { expected: "number", .. }),
                "{text}"
            );
        }
    }

    #[test]
    fn booleans_dates_and_timestamps() {
        // No standard dataset has a boolean field, so typing is tested directly.
        assert_eq!(
            typed_value(FieldType::Bool, "true", false),
            Some(value::Kind::BoolValue(true))
        );
        assert_eq!(
            typed_value(FieldType::Bool, "false", false),
            Some(value::Kind::BoolValue(false))
        );
        assert_eq!(typed_value(FieldType::Bool, "True", false), None);
        assert_eq!(typed_value(FieldType::Bool, "true", true), None);
        assert_eq!(typed_value(FieldType::Bool, "1", false), None);

        let date = value::Kind::DateValue("2020-02-29".into());
        assert_eq!(
            comparison(&ok("established >= 2020-02-29"))
                .value
                .as_ref()
                .unwrap()
                .kind,
            Some(date.clone())
        );
        assert_eq!(
            comparison(&ok("established >= '2020-02-29'"))
                .value
                .as_ref()
                .unwrap()
                .kind,
            Some(date)
        );
        for bad in [
            "established = 2019-02-29",
            "established = 2020-2-1",
            "established = yesterday",
        ] {
            assert!(
                matches!(err(bad), QueryError::TypeMismatch { expected: "date", .. }),
                "{bad}"
            );
        }

        let expected = Some(value::Kind::TimestampValue(prost_types::Timestamp {
            seconds: 1_740_816_000,
            nanos: 0,
        }));
        for text in [
            "observed_at >= 2025-03-01T08:00:00Z",
            "observed_at >= \"2025-03-01T16:00:00+08:00\"",
            "observed_at >= '2025-03-01T08:00:00.750Z'",
        ] {
            let expr = air(text).unwrap().unwrap();
            assert_eq!(comparison(&expr).value.as_ref().unwrap().kind, expected, "{text}");
        }
        match air("observed_at > 2025-03-01") {
            Err(QueryError::TypeMismatch {
                expected: "timestamp",
                found,
                ..
            }) => assert_eq!(found, "2025-03-01"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn has_and_prefix() {
        let c = ok(r#"name:"Jiangsu*""#);
        let c = comparison(&c);
        assert_eq!((c.op, c.prefix), (CompareOp::Has as i32, true));
        assert_eq!(
            c.value.as_ref().unwrap().kind,
            Some(value::Kind::StringValue("Jiangsu".into()))
        );

        let c = ok("name : Jiang*");
        assert!(comparison(&c).prefix);

        // Without a star, `:` is equality.
        let c = ok("name:Jiangsu");
        let c = comparison(&c);
        assert_eq!((c.op, c.prefix), (CompareOp::Has as i32, false));

        // An escaped star is a character, not a wildcard.
        let c = ok(r#"name:"five\*""#);
        let c = comparison(&c);
        assert!(!c.prefix);
        assert_eq!(
            c.value.as_ref().unwrap().kind,
            Some(value::Kind::StringValue("five*".into()))
        );

        // `*` is only a wildcard after `:`.
        let c = ok("name = abc*");
        assert!(!comparison(&c).prefix);

        // On other types `:` is equality, and a star is not a number.
        let c = air("aqi:50").unwrap().unwrap();
        assert!(!comparison(&c).prefix);
        assert!(matches!(air("aqi:5*"), Err(QueryError::TypeMismatch { .. })));
    }

    #[test]
    fn field_errors() {
        assert_eq!(
            err("nonexistent = 1"),
            QueryError::UnknownField {
                param: "filter",
                dataset: "enterprise".into(),
                field: "nonexistent".into()
            }
        );
        assert_eq!(
            err("legal_representative = Zhang"),
            QueryError::FieldNotAllowed {
                param: "filter",
                field: "legal_representative".into(),
                reason: "may not be filtered".into()
            }
        );
        assert!(matches!(err("address:Shanghai"), QueryError::FieldNotAllowed { .. }));
    }

    #[test]
    fn syntax_errors_name_position_and_expectation() {
        let cases: &[(&str, usize, &str)] = &[
            ("city =", 7, "expected a value after `=`, found end of filter"),
            ("city", 5, "expected a comparison operator"),
            ("city ~ a", 6, "found `~`"),
            (
                "city = a AND",
                13,
                "expected a field name, `(`, NOT or `-`, found end of filter",
            ),
            ("AND city = a", 1, "found `AND`"),
            ("city = a OR OR city = b", 13, "found `OR`"),
            (
                "(city = a",
                10,
                "expected `)` to close the `(` at character 1, found end of filter",
            ),
            ("city = a)", 9, "found `)` without a matching `(`"),
            ("city = \"abc", 8, "unterminated string"),
            ("city = 'a\\", 8, "unterminated string"),
            ("city = \"a\\nb\"", 10, "unknown escape `\\n`"),
            ("city = a \"b\"", 10, "expected a field name"),
            ("city = (a)", 8, "expected a value after `=`"),
            ("city = AND", 8, "found `AND`"),
            ("city ! a", 6, "found `!`"),
            ("()", 2, "found `)`"),
            ("长 = a", 1, "expected a field name"),
            ("city = 长 )", 10, "without a matching"),
            // Quotes are not doubled to escape them: this is two literals.
            (
                "name = 'it''s'",
                12,
                "expected a field name, `(`, NOT or `-`, found `'s'`",
            ),
        ];
        for &(text, position, fragment) in cases {
            let e = err(text);
            assert_eq!(syntax_at(&e), position, "{text}: {e}");
            assert!(e.to_string().contains(fragment), "{text}: {e}");
            assert_eq!(e.param(), "filter");
        }
    }

    #[test]
    fn long_excerpts_are_cut() {
        let e = err(&format!("city = a 9{}", "x".repeat(100)));
        assert!(
            e.to_string()
                .contains(&format!("found `9{}…`", "x".repeat(EXCERPT_CHARS - 1))),
            "{e}"
        );
    }

    #[test]
    fn length_limit_is_checked_first() {
        let limits = Limits {
            max_filter_length: 10,
            ..Limits::default()
        };
        let text = "city = a AND (((";
        assert_eq!(
            parse_filter(text, schema("enterprise"), &limits),
            Err(QueryError::Limit {
                param: "filter",
                limit: "max_filter_length",
                max: 10,
                actual: 16
            })
        );
        assert!(parse_filter("city = abc", schema("enterprise"), &limits).is_ok());
    }

    #[test]
    fn depth_limit() {
        let limits = Limits {
            max_filter_depth: 2,
            ..Limits::default()
        };
        let p = |t: &str| parse_filter(t, schema("enterprise"), &limits);
        assert!(p("NOT NOT city = a").is_ok());
        assert!(p("city = a AND (city = b OR NOT city = c)").is_err());
        assert!(p("city = a AND (city = b OR city = c)").is_ok());
        match p("NOT NOT NOT city = a") {
            Err(QueryError::Limit {
                param: "filter",
                limit: "max_filter_depth",
                max: 2,
                actual: 3,
            }) => {}
            other => panic!("{other:?}"),
        }
        // Parentheses are counted before parsing, so deep input costs a
        // scan and the error says how deep it was.
        let deep = format!("{}city = a{}", "(".repeat(1000), ")".repeat(1000));
        assert!(matches!(
            parse_filter(&deep, schema("enterprise"), &Limits::default()),
            Err(QueryError::Limit {
                limit: "max_filter_depth",
                max: 16,
                actual: 1000,
                ..
            })
        ));
        // Parentheses in strings are not nesting.
        let quoted = format!("name = \"{}\"", "(".repeat(1000));
        assert!(parse_filter(&quoted, schema("enterprise"), &Limits::default()).is_ok());
        let quoted = format!("name = '\\'{}' AND city = a", "(".repeat(1000));
        assert!(parse_filter(&quoted, schema("enterprise"), &Limits::default()).is_ok());
        // Negations count while parsing, before each step down.
        let nots = format!("{}city = a", "NOT ".repeat(100_000));
        assert!(matches!(
            parse_filter(
                &nots,
                schema("enterprise"),
                &Limits {
                    max_filter_length: 1 << 20,
                    ..Limits::default()
                }
            ),
            Err(QueryError::Limit {
                limit: "max_filter_depth",
                max: 16,
                actual: 17,
                ..
            })
        ));
    }

    #[test]
    fn term_limit() {
        let limits = Limits {
            max_filter_terms: 3,
            ..Limits::default()
        };
        let p = |t: &str| parse_filter(t, schema("enterprise"), &limits);
        assert!(p("city = a OR city = b OR city = c").is_ok());
        assert_eq!(
            p("city = a OR city = b OR city = c OR city = d"),
            Err(QueryError::Limit {
                param: "filter",
                limit: "max_filter_terms",
                max: 3,
                actual: 4
            })
        );
    }

    #[test]
    fn to_text_round_trips() {
        let texts = [
            "city = a",
            r#"name = "a \"quoted\" \\ name""#,
            "status = a AND city = b OR city = c",
            "(status = a AND city = b) OR city = c",
            "status = a OR (city = b AND (city = c OR NOT city = d))",
            "NOT (city = a OR city = b)",
            "-(-city = a)",
            "registered_capital >= 1.5e6 AND registered_capital < 1e300 AND registered_capital != -0.000001",
            "registered_capital > 3",
            "established <= 2020-02-29",
            r#"name:"Jiang*" name:"a\*" name:"a\**" name:plain"#,
            "name != '' city < b city <= c city > d city >= e",
        ];
        for text in texts {
            let expr = ok(text);
            let canonical = to_text(&expr);
            assert_eq!(ok(&canonical), expr, "{text} -> {canonical}");
            // Canonical text is a fixed point.
            assert_eq!(to_text(&ok(&canonical)), canonical);
        }
        for text in [
            "aqi:-7 AND observed_at > '2025-03-01T16:00:00+08:00'",
            "aqi = 5 OR aqi_level >= 2",
        ] {
            let expr = air(text).unwrap().unwrap();
            let canonical = to_text(&expr);
            assert_eq!(air(&canonical).unwrap().unwrap(), expr, "{text} -> {canonical}");
        }
        assert_eq!(
            to_text(&ok("city = a OR city = b AND status = c")),
            r#"(city = "a" OR city = "b") AND status = "c""#
        );
        assert_eq!(
            to_text(&air("observed_at >= '2025-03-01T16:00:00+08:00'").unwrap().unwrap()),
            r#"observed_at >= "2025-03-01T08:00:00Z""#
        );
    }

    #[test]
    fn check_filter_accepts_parsed_trees() {
        let expr = ok("city = a OR NOT (registered_capital > 5 AND established < 2020-01-01) name:\"x*\"");
        assert_eq!(check_filter(&expr, schema("enterprise"), &Limits::default()), Ok(()));
        // A number field accepts an integer value.
        let int_on_double = cmp("registered_capital", CompareOp::Gt, value::Kind::IntValue(5));
        assert_eq!(
            check_filter(&int_on_double, schema("enterprise"), &Limits::default()),
            Ok(())
        );
    }

    #[test]
    fn check_filter_rejects_bad_trees() {
        let ent = schema("enterprise");
        let check = |e: &FilterExpr| check_filter(e, ent, &Limits::default());
        let invalid = |e: &FilterExpr, fragment: &str| match check(e) {
            Err(QueryError::Invalid {
                param: "filter_expr",
                message,
            }) => {
                assert!(message.contains(fragment), "{message}");
            }
            other => panic!("{other:?}"),
        };
        invalid(&FilterExpr::default(), "none of");
        invalid(&and(vec![s("city", "a"), FilterExpr::default()]), "none of");
        invalid(&and(vec![]), "AND list has no operands");
        invalid(&not(or(vec![])), "OR list has no operands");

        let mut no_op = s("city", "a");
        if let Some(filter_expr::Kind::Comparison(c)) = &mut no_op.kind {
            c.op = 0;
        }
        invalid(&no_op, "no valid operator (got 0)");
        let mut bad_op = s("city", "a");
        if let Some(filter_expr::Kind::Comparison(c)) = &mut bad_op.kind {
            c.op = 99;
        }
        invalid(&bad_op, "got 99");
        let mut no_value = s("city", "a");
        if let Some(filter_expr::Kind::Comparison(c)) = &mut no_value.kind {
            c.value = Some(Value::default());
        }
        invalid(&no_value, "has no value");
        let mut prefix_eq = s("city", "a");
        if let Some(filter_expr::Kind::Comparison(c)) = &mut prefix_eq.kind {
            c.prefix = true;
        }
        invalid(&prefix_eq, "prefix");

        assert!(matches!(
            check(&s("nope", "a")),
            Err(QueryError::UnknownField {
                param: "filter_expr",
                ..
            })
        ));
        assert!(matches!(
            check(&s("legal_representative", "a")),
            Err(QueryError::FieldNotAllowed {
                param: "filter_expr",
                ..
            })
        ));
        let mismatches = [
            cmp("city", CompareOp::Eq, value::Kind::IntValue(1)),
            cmp(
                "registered_capital",
                CompareOp::Eq,
                value::Kind::StringValue("1".into()),
            ),
            cmp("registered_capital", CompareOp::Eq, value::Kind::DoubleValue(f64::NAN)),
            cmp(
                "established",
                CompareOp::Eq,
                value::Kind::DateValue("2020-13-01".into()),
            ),
            cmp(
                "established",
                CompareOp::Eq,
                value::Kind::StringValue("2020-01-01".into()),
            ),
        ];
        for m in mismatches {
            assert!(
                matches!(
                    check(&m),
                    Err(QueryError::TypeMismatch {
                        param: "filter_expr",
                        ..
                    })
                ),
                "{m:?}"
            );
        }
        let air_schema = schema("air_quality");
        let ts = |nanos| {
            cmp(
                "observed_at",
                CompareOp::Eq,
                value::Kind::TimestampValue(prost_types::Timestamp { seconds: 0, nanos }),
            )
        };
        assert_eq!(check_filter(&ts(5), air_schema, &Limits::default()), Ok(()));
        assert!(check_filter(&ts(-1), air_schema, &Limits::default()).is_err());
        assert!(
            check_filter(
                &cmp("aqi", CompareOp::Eq, value::Kind::DoubleValue(1.0)),
                air_schema,
                &Limits::default()
            )
            .is_err()
        );
    }

    #[test]
    fn check_filter_applies_limits() {
        let limits = Limits {
            max_filter_depth: 3,
            max_filter_terms: 2,
            ..Limits::default()
        };
        let deep = not(not(not(not(s("city", "a")))));
        assert_eq!(
            check_filter(&deep, schema("enterprise"), &limits),
            Err(QueryError::Limit {
                param: "filter_expr",
                limit: "max_filter_depth",
                max: 3,
                actual: 4
            })
        );
        let wide = or(vec![s("city", "a"), s("city", "b"), s("city", "c")]);
        assert_eq!(
            check_filter(&wide, schema("enterprise"), &limits),
            Err(QueryError::Limit {
                param: "filter_expr",
                limit: "max_filter_terms",
                max: 2,
                actual: 3
            })
        );
    }

    #[test]
    fn regions_matched_prunes_only_when_certain() {
        let regions = |text: &str| regions_matched(&ok(text), "region");
        let set = |codes: &[&str]| Some(codes.iter().map(|c| c.to_string()).collect::<BTreeSet<_>>());
        assert_eq!(regions("region = 320000"), set(&["320000"]));
        assert_eq!(regions("region:320000"), set(&["320000"]));
        assert_eq!(
            regions("region = 320000 OR region = \"330000\""),
            set(&["320000", "330000"])
        );
        assert_eq!(regions("region = 320000 AND status = active"), set(&["320000"]));
        assert_eq!(
            regions("(region = 320000 OR region = 330000) AND (region = 330000 OR region = 340000)"),
            set(&["330000"])
        );
        assert_eq!(regions("region = 320000 AND region = 330000"), set(&[]));
        assert_eq!(regions("status = active"), None);
        assert_eq!(regions("region = 320000 OR status = active"), None);
        assert_eq!(regions("region != 320000"), None);
        assert_eq!(regions("region > 320000"), None);
        assert_eq!(regions("region:32*"), None);
        assert_eq!(regions("NOT region = 320000"), None);
        assert_eq!(regions("-(NOT region = 320000)"), None);
        assert_eq!(regions_matched(&FilterExpr::default(), "region"), None);
        assert_eq!(regions_matched(&or(vec![]), "region"), None);
    }
}
