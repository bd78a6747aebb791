//! JSON reshaping: rename, move and remove fields by dotted path, in that
//! order, each step seeing the result of the one before. A path crossing
//! an array applies to each element (renames and removes); moves follow
//! objects only. A path that is not there changes nothing.

use super::document::{Json, Members};

/// A dotted field path, split once at config load.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    /// Splits `a.b.c`; `None` when a segment is empty.
    pub fn parse(text: &str) -> Option<FieldPath> {
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        segments
            .iter()
            .all(|s| !s.is_empty())
            .then_some(FieldPath(segments))
    }

    /// Whether `self` is `other` or lies inside it.
    pub fn starts_with(&self, other: &FieldPath) -> bool {
        self.0.starts_with(&other.0)
    }

    /// The parent segments and the last one.
    fn split_last(&self) -> (&[String], &str) {
        match self.0.split_last() {
            Some((last, parents)) => (parents, last.as_str()),
            None => (&[], ""),
        }
    }
}

/// One side's changes, compiled.
#[derive(Debug, Clone, Default)]
pub struct Reshape {
    /// Path → new name of its last segment.
    pub renames: Vec<(FieldPath, String)>,
    /// From → to.
    pub moves: Vec<(FieldPath, FieldPath)>,
    /// Removed paths.
    pub removes: Vec<FieldPath>,
}

impl Reshape {
    /// Applies renames, then moves, then removes.
    pub fn apply(&self, doc: &mut Json) {
        for (path, name) in &self.renames {
            let (parents, last) = path.split_last();
            each_parent(doc, parents, &mut |members| rename(members, last, name));
        }
        for (from, to) in &self.moves {
            move_field(doc, from, to);
        }
        for path in &self.removes {
            let (parents, last) = path.split_last();
            each_parent(doc, parents, &mut |members| {
                members.retain(|(k, _)| k != last)
            });
        }
    }
}

/// Calls `f` with the members of every object `parents` leads to from
/// `value`, going into each element of the arrays met on the way.
fn each_parent(value: &mut Json, parents: &[String], f: &mut dyn FnMut(&mut Members)) {
    match value {
        Json::Array(items) => {
            for item in items {
                each_parent(item, parents, f);
            }
        }
        Json::Object(members) => match parents.split_first() {
            None => f(members),
            Some((head, rest)) => {
                for (key, child) in members.iter_mut() {
                    if key == head {
                        each_parent(child, rest, f);
                    }
                }
            }
        },
        _ => {}
    }
}

/// Renames the member `from` to `to`, replacing a member already named `to`.
fn rename(members: &mut Members, from: &str, to: &str) {
    if from == to || !members.iter().any(|(k, _)| k == from) {
        return;
    }
    members.retain(|(k, _)| k != to);
    for (key, _) in members.iter_mut() {
        if key == from {
            *key = to.to_owned();
        }
    }
}

/// Moves the value at `from` to `to`, creating objects on the way; nothing
/// happens when `from` is missing or `to` crosses something not an object.
fn move_field(doc: &mut Json, from: &FieldPath, to: &FieldPath) {
    if !can_hold(doc, to) {
        return;
    }
    let Some(value) = take(doc, from) else {
        return;
    };
    let (parents, last) = to.split_last();
    let mut members = match doc {
        Json::Object(members) => members,
        _ => return,
    };
    for segment in parents {
        let at = match members.iter().position(|(k, _)| k == segment) {
            Some(at) => at,
            None => {
                members.push((segment.clone(), Json::Object(Vec::new())));
                members.len() - 1
            }
        };
        members = match &mut members[at].1 {
            Json::Object(inner) => inner,
            // Checked by can_hold before anything was taken.
            _ => return,
        };
    }
    match members.iter_mut().find(|(k, _)| k == last) {
        Some((_, slot)) => *slot = value,
        None => members.push((last.to_owned(), value)),
    }
}

/// Whether every object on `path`'s way exists as an object or is missing.
fn can_hold(doc: &Json, path: &FieldPath) -> bool {
    let (parents, _) = path.split_last();
    let mut current = doc;
    if !matches!(current, Json::Object(_)) {
        return false;
    }
    for segment in parents {
        match current.get(segment) {
            None => return true,
            Some(next @ Json::Object(_)) => current = next,
            Some(_) => return false,
        }
    }
    true
}

/// Removes and returns the value at `path` (objects only).
fn take(doc: &mut Json, path: &FieldPath) -> Option<Json> {
    let (parents, last) = path.split_last();
    let mut current = doc;
    for segment in parents {
        current = match current {
            Json::Object(members) => members
                .iter_mut()
                .find(|(k, _)| k == segment)
                .map(|(_, v)| v)?,
            _ => return None,
        };
    }
    match current {
        Json::Object(members) => {
            let at = members.iter().position(|(k, _)| k == last)?;
            Some(members.remove(at).1)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> FieldPath {
        FieldPath::parse(text).unwrap()
    }

    fn reshaped(reshape: &Reshape, json: &str) -> String {
        let mut doc = Json::parse(json.as_bytes()).unwrap();
        reshape.apply(&mut doc);
        String::from_utf8(doc.to_vec()).unwrap()
    }

    #[test]
    fn renames_moves_and_removes_in_order() {
        let reshape = Reshape {
            renames: vec![
                (path("userName"), "user_name".into()),
                (path("items.price"), "cost".into()),
            ],
            moves: vec![
                (path("address.zip"), path("zip")),
                (path("data.items"), path("list.all")),
            ],
            removes: vec![path("debug"), path("items.secret"), path("data")],
        };
        let out = reshaped(
            &reshape,
            r##"{"userName":"ada","debug":1,"address":{"zip":"123","city":"x"},"items":[{"price":1,"secret":2},{"price":3}],"data":{"items":[1,2]}}"##,
        );
        assert_eq!(
            out,
            r##"{"user_name":"ada","address":{"city":"x"},"items":[{"cost":1},{"cost":3}],"zip":"123","list":{"all":[1,2]}}"##
        );
    }

    #[test]
    fn missing_or_blocked_paths_change_nothing() {
        let reshape = Reshape {
            renames: vec![(path("a.b.c"), "d".into())],
            moves: vec![(path("nothere"), path("x")), (path("a.b"), path("s.t"))],
            removes: vec![path("z.y")],
        };
        let json = r##"{"a":{"b":1},"s":"scalar"}"##;
        assert_eq!(reshaped(&reshape, json), json);
        // A rename onto an existing name replaces it; top-level arrays fan out.
        let reshape = Reshape {
            renames: vec![(path("a"), "b".into())],
            ..Reshape::default()
        };
        assert_eq!(
            reshaped(&reshape, r##"[{"a":1,"b":2},{"a":3}]"##),
            r##"[{"b":1},{"b":3}]"##
        );
        assert!(FieldPath::parse("a..b").is_none());
        assert!(path("a.b.c").starts_with(&path("a.b")));
    }
}
