//! A sink's `fields = [...]`: checked by the daemon, not only by the
//! plugin, so `check-config` refuses an unknown field for every sink (a
//! custom plugin included, which may only see it at open) and points at
//! the very name that is wrong.

use std::ops::Range;

use flowlogd_plugin_api::{Field, FieldList};
use toml::Spanned;

/// What is wrong with the `fields` value `value` (in `src`), and where:
/// the offending name's span when it can be found, else the value's.
pub(super) fn field_list_problem(
    src: &str,
    value: &Spanned<toml::Value>,
) -> Option<(Range<usize>, String)> {
    let span = value.span();
    let Some(items) = value.get_ref().as_array() else {
        return Some((span, "expected an array of field names".into()));
    };
    let mut names = Vec::with_capacity(items.len());
    for item in items {
        match item.as_str() {
            Some(name) => names.push(name),
            None => return Some((span, format!("expected field names (strings), got {item}"))),
        }
    }
    let Err(e) = FieldList::parse(&names) else {
        return None;
    };
    // The name the error is about: the first unknown one, or the second
    // occurrence of a name given twice (an empty list has none).
    let offending = names
        .iter()
        .enumerate()
        .position(|(i, name)| Field::from_name(name).is_none() || names[..i].contains(name));
    let at = offending.and_then(|i| element_spans(src, span.clone(), &names).swap_remove(i));
    Some((at.unwrap_or(span), e.0))
}

/// Where each of `names` is written inside `within`, in order: each found
/// after the previous one, quoted with `"` or `'`. `None` for a name
/// written with escapes (then the error points at the whole value).
fn element_spans(src: &str, within: Range<usize>, names: &[&str]) -> Vec<Option<Range<usize>>> {
    let Some(text) = src.get(within.clone()) else {
        return vec![None; names.len()];
    };
    let mut from = 0;
    names
        .iter()
        .map(|name| {
            let found = [format!("\"{name}\""), format!("'{name}'")]
                .iter()
                .filter_map(|quoted| {
                    text[from..]
                        .find(quoted.as_str())
                        .map(|i| (i, quoted.len()))
                })
                .min();
            found.map(|(i, len)| {
                let start = from + i;
                from = start + len;
                within.start + start..within.start + start + len
            })
        })
        .collect()
}
