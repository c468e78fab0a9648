//! Step input templates and the bounds on the queries in them.
//!
//! A template is JSON. Any string in it that starts with `$` is a JSONPath
//! query (RFC 9535, via `serde_json_path`) evaluated against the execution's
//! context, `{"data": <execution data>, "steps": {<step name>: <its output>}}`,
//! and replaced by the value it selects (`null` when it selects nothing). A
//! string that starts with `$$` stands for the literal text with one `$`
//! removed. Everything else is copied as is.
//!
//! Queries come from users, so their cost is bounded twice. Before a query
//! reaches the parser, one linear scan checks its size, how deeply brackets
//! and parentheses nest, how many filters it has and how deeply they nest,
//! and how many descendant segments (`..`) it has: the parser recurses on
//! nesting and backtracks on nested filters, so these bounds keep parsing
//! short and the stack shallow whatever the text. Before a query runs, its
//! cost on the context at hand is estimated from the context's size and the
//! query's shape, and a query over the evaluation budget fails its step.

use serde_json::Value;
use serde_json_path::JsonPath;

/// Longest query, in bytes.
pub const MAX_QUERY_BYTES: usize = 256;
/// Deepest nesting of `[` and `(` in a query.
pub const MAX_QUERY_NESTING: usize = 8;
/// Most filters (`?`) in one query.
pub const MAX_QUERY_FILTERS: usize = 4;
/// Deepest nesting of filters inside filters.
pub const MAX_FILTER_NESTING: usize = 2;
/// Most descendant segments (`..`) in one query.
pub const MAX_DESCENDANT_SEGMENTS: usize = 1;
/// Most node visits one query may cost, estimated before it runs.
pub const EVAL_BUDGET: u64 = 4_000_000;

/// A query that may be parsed: it passed the bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    filters: usize,
    descendants: usize,
}

/// Checks a query's text against the bounds, in one pass and without
/// recursion. String literals (in filters) are skipped over.
fn shape(text: &str) -> Result<Shape, String> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(format!(
            "is {} bytes; a query is at most {MAX_QUERY_BYTES} bytes",
            text.len()
        ));
    }
    let bytes = text.as_bytes();
    // Open brackets and parentheses, innermost last; `true` marks a
    // bracket that opened a filter.
    let mut open: Vec<bool> = Vec::new();
    let mut filters = 0;
    let mut descendants = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'(' => {
                open.push(false);
                if open.len() > MAX_QUERY_NESTING {
                    return Err(format!(
                        "nests brackets and parentheses more than {MAX_QUERY_NESTING} deep"
                    ));
                }
            }
            b']' | b')' => {
                open.pop();
            }
            b'?' => {
                filters += 1;
                if filters > MAX_QUERY_FILTERS {
                    return Err(format!("has more than {MAX_QUERY_FILTERS} filters"));
                }
                if let Some(top) = open.last_mut() {
                    *top = true;
                }
                if open.iter().filter(|filter| **filter).count() > MAX_FILTER_NESTING {
                    return Err(format!("nests filters more than {MAX_FILTER_NESTING} deep"));
                }
            }
            b'.' if bytes.get(i + 1) == Some(&b'.') => {
                descendants += 1;
                if descendants > MAX_DESCENDANT_SEGMENTS {
                    return Err(format!(
                        "has more than {MAX_DESCENDANT_SEGMENTS} descendant segment (`..`)"
                    ));
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(Shape {
        filters,
        descendants,
    })
}

/// A parsed query with its shape.
struct Query {
    path: JsonPath,
    shape: Shape,
}

impl Query {
    fn parse(text: &str) -> Result<Self, String> {
        let shape = shape(text).map_err(|why| format!("query {:?} {why}", preview(text)))?;
        let path =
            JsonPath::parse(text).map_err(|err| format!("query {:?}: {err}", preview(text)))?;
        Ok(Self { path, shape })
    }

    /// Node visits this query may cost on a context of `nodes` nodes: each
    /// filter may look at every node once more, and a descendant segment
    /// walks the whole context.
    fn cost(&self, nodes: u64) -> u64 {
        let per_node = (1 + self.shape.filters as u64) * (1 + self.shape.descendants as u64);
        nodes.saturating_mul(per_node)
    }
}

/// The start of a long query, for messages.
fn preview(text: &str) -> String {
    text.chars().take(64).collect()
}

fn is_query(text: &str) -> bool {
    text.starts_with('$') && !text.starts_with("$$")
}

/// Checks that every query in a template is within the bounds and parses.
pub fn check(template: &Value) -> Result<(), String> {
    match template {
        Value::String(text) if is_query(text) => Query::parse(text).map(|_| ()),
        Value::Array(items) => items.iter().try_for_each(check),
        Value::Object(map) => map.values().try_for_each(check),
        _ => Ok(()),
    }
}

/// Counts the nodes of a JSON value, without recursion.
fn count_nodes(value: &Value) -> u64 {
    let mut pending = vec![value];
    let mut nodes = 0u64;
    while let Some(value) = pending.pop() {
        nodes += 1;
        match value {
            Value::Array(items) => pending.extend(items),
            Value::Object(map) => pending.extend(map.values()),
            _ => {}
        }
    }
    nodes
}

/// Builds a step's input from its template and the execution's context.
/// Fails when a query is out of bounds or over the evaluation budget.
pub fn render(template: &Value, context: &Value) -> Result<Value, String> {
    let nodes = count_nodes(context);
    render_with(template, context, nodes)
}

fn render_with(template: &Value, context: &Value, nodes: u64) -> Result<Value, String> {
    Ok(match template {
        Value::String(text) if text.starts_with("$$") => Value::String(text[1..].to_owned()),
        Value::String(text) if text.starts_with('$') => {
            let query = Query::parse(text)?;
            let cost = query.cost(nodes);
            if cost > EVAL_BUDGET {
                return Err(format!(
                    "query {:?} would visit about {cost} nodes of this context ({nodes} nodes), \
                     over the budget of {EVAL_BUDGET}",
                    preview(text)
                ));
            }
            query
                .path
                .query(context)
                .at_most_one()
                .ok()
                .flatten()
                .cloned()
                .unwrap_or(Value::Null)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| render_with(item, context, nodes))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| Ok((key.clone(), render_with(value, context, nodes)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn templates_take_values_from_data_and_earlier_steps() {
        let context = json!({
            "data": {"title": "t", "n": 3, "tags": ["a"]},
            "steps": {"create": {"todoId": "todo_1"}}
        });
        let template = json!({
            "title": "$.data.title",
            "n": "$.data.n",
            "tags": "$.data.tags",
            "id": "$.steps.create.todoId",
            "missing": "$.data.nope",
            "literal": "$$.not.a.query",
            "plain": "text",
            "nested": [{"x": "$.data.n"}],
            "filtered": "$.data.tags[?@ == 'a']",
            "anywhere": "$..todoId"
        });
        assert_eq!(
            render(&template, &context).unwrap(),
            json!({
                "title": "t", "n": 3, "tags": ["a"], "id": "todo_1", "missing": null,
                "literal": "$.not.a.query", "plain": "text", "nested": [{"x": 3}],
                "filtered": "a", "anywhere": "todo_1"
            })
        );
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        // About 2 KB of parentheses overflowed the parser's stack.
        let deep = format!("$[?{}@.a{}]", "(".repeat(1000), ")".repeat(1000));
        let err = check(&json!(deep)).unwrap_err();
        assert!(err.contains("bytes"), "{err}");
        let deep = format!("$[?{}@.a{}]", "(".repeat(20), ")".repeat(20));
        let err = check(&json!(deep)).unwrap_err();
        assert!(err.contains("nests brackets"), "{err}");
    }

    #[test]
    fn nested_filters_are_refused_and_parsing_stays_fast() {
        // Parsing doubled with each nested filter: 40 levels never ended.
        let hostile = format!("${}.a{}", "[?@".repeat(40), "]".repeat(40));
        assert_eq!(hostile.len(), 163);
        let err = check(&json!(hostile)).unwrap_err();
        assert!(err.contains("filters"), "{err}");
        // Two nested filters, the most the bounds allow, still parse.
        assert!(check(&json!("$.data[?@.items[?@.done == true]]")).is_ok());
        let err = check(&json!("$[?@[?@[?@.a]]]")).unwrap_err();
        assert!(err.contains("nests filters"), "{err}");
    }

    #[test]
    fn repeated_descendant_segments_are_refused() {
        let err = check(&json!("$..*..*")).unwrap_err();
        assert!(err.contains("descendant"), "{err}");
        assert!(check(&json!("$..title")).is_ok());
    }

    #[test]
    fn string_literals_do_not_count_as_structure() {
        let query = format!("$.data[?@.name == '{}']", "[(..?".repeat(10));
        assert!(check(&json!(query)).is_ok(), "{query}");
    }

    #[test]
    fn queries_over_the_budget_fail_their_step() {
        let big: Vec<Value> = (0..1_500_000).map(|n| json!(n)).collect();
        let context = json!({"data": big, "steps": {}});
        assert!(render(&json!("$.data[0]"), &context).is_ok());
        let err = render(&json!("$..[?@ > 5]"), &context).unwrap_err();
        assert!(err.contains("budget"), "{err}");
    }
}
