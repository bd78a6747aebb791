//! Column-aligned plain-text tables, the human output of `mesh-ctl`.
//! Reads: a header and rows of already formatted cells. Writes: a string.
//! Errors: none; a row shorter than the header gets empty cells.

/// Renders `header` and `rows` as left-aligned columns two spaces apart, in
/// the manner of `kubectl get`. Widths count characters, not bytes; the last
/// column is not padded, so lines carry no trailing spaces. Every line,
/// the last included, ends with a newline.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).fold(header.len(), usize::max);
    let mut widths = vec![0; columns];
    let lines: Vec<Vec<&str>> = std::iter::once(header.to_vec())
        .chain(
            rows.iter()
                .map(|row| row.iter().map(String::as_str).collect()),
        )
        .collect();
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = line.get(i).copied().unwrap_or("");
            text.push_str(cell);
            if i + 1 < columns {
                let pad = width - cell.chars().count() + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn aligns_columns_two_spaces_apart() {
        let text = render(
            &["KIND", "UPSTREAM", "BOUND"],
            &[
                row(&["inbound", "-", "127.0.0.1:4000"]),
                row(&["outbound", "orders", "127.0.0.1:4001"]),
            ],
        );
        assert_eq!(
            text,
            "KIND      UPSTREAM  BOUND\n\
             inbound   -         127.0.0.1:4000\n\
             outbound  orders    127.0.0.1:4001\n"
        );
    }

    #[test]
    fn header_only_when_no_rows() {
        assert_eq!(render(&["A", "BB"], &[]), "A  BB\n");
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let text = render(&["NAME", "X"], &[row(&["héllo", "1"]), row(&["ab", "2"])]);
        assert_eq!(text, "NAME   X\nhéllo  1\nab     2\n");
    }

    #[test]
    fn short_rows_get_empty_cells_and_no_trailing_spaces() {
        let text = render(&["A", "B", "C"], &[row(&["x"]), row(&["", "", "z"])]);
        assert_eq!(text, "A  B  C\nx\n      z\n");
        assert!(text.lines().all(|line| !line.ends_with(' ')));
    }
}
