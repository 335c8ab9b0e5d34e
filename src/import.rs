//! The users spreadsheet: the template (CSV and XLSX alike), reading an upload safely,
//! and turning its rows into users — or into the full list of reasons it is refused.
//!
//! Layout (API.md): row 1 is `onecard-users-template`, `v<N>`; row 2 the column keys;
//! data from row 3. Everything here is synchronous and CPU-bound: callers run it on a
//! blocking thread (`web::block`), never on the async workers.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;

use calamine::{Data, Reader, Xlsx};
use onecard_actors::domain::directory as rules;
use onecard_actors::domain::validate::{Checks, Violation};
use onecard_actors::keys::Keys;
use onecard_schema::ids::{DepartmentId, TagId, UserId};
use onecard_schema::model::{IdNumber, NewUser};

use crate::limits::{
    IMPORT_CELL_BYTES_MAX, IMPORT_COLUMNS_MAX, IMPORT_ROWS_MAX, XLSX_ENTRIES_MAX,
    XLSX_UNCOMPRESSED_BYTES_MAX,
};
use crate::problem::ApiError;

pub const TEMPLATE_MARKER: &str = "onecard-users-template";
/// Bump when the columns change; uploads of another version are refused.
pub const TEMPLATE_VERSION: &str = "v1";
pub const COLUMNS: [&str; 7] = [
    "name",
    "number",
    "phone",
    "id_number",
    "department",
    "tags",
    "identity",
];
pub const XLSX_MIME: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// Spreadsheet row number (1-based) and its cells.
pub type Row = (u32, Vec<String>);

pub fn template_csv() -> Vec<u8> {
    format!(
        "{TEMPLATE_MARKER},{TEMPLATE_VERSION}\r\n{}\r\n",
        COLUMNS.join(",")
    )
    .into_bytes()
}

pub fn template_xlsx() -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::{Format, Workbook};
    let mut wb = Workbook::new();
    let text = Format::new().set_num_format("@");
    let bold = Format::new().set_bold().set_num_format("@");
    let sheet = wb.add_worksheet();
    sheet.set_name("users")?;
    sheet.write_string(0, 0, TEMPLATE_MARKER)?;
    sheet.write_string(0, 1, TEMPLATE_VERSION)?;
    for (col, key) in COLUMNS.iter().enumerate() {
        let col = col as u16;
        sheet.write_string_with_format(1, col, *key, &bold)?;
        // Text cells, so that spreadsheet programs keep leading zeros and long numbers.
        sheet.set_column_format(col, &text)?;
        sheet.set_column_width(col, 18)?;
    }
    let help = wb.add_worksheet();
    help.set_name("instructions")?;
    let lines = [
        "Fill the 'users' sheet from row 3. Keep rows 1 and 2 as they are.",
        "name, number: required. number is unique in your organisation.",
        "phone: optional, digits with an optional leading +.",
        "id_number: optional; stored as a keyed hash, only the last 4 characters are shown.",
        "department: a path such as Teaching/Maths; it must exist.",
        "tags: tag names separated by ';'; each must exist.",
        "identity: optional label such as student or teacher.",
        "A row whose number already exists updates that user; empty optional cells keep what they had.",
        "Up to 10,000 rows. Any invalid row refuses the whole file, listing every problem.",
    ];
    for (i, line) in lines.iter().enumerate() {
        help.write_string(i as u32, 0, *line)?;
    }
    wb.save_to_buffer()
}

fn invalid_file(message: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        code: "invalid_file",
        detail: "the file could not be read as CSV or XLSX".into(),
        errors: vec![Violation {
            field: "file".into(),
            rule: "invalid_file".into(),
            message: message.into(),
            row: None,
        }],
    }
}

fn refusal(code: &'static str, errors: Vec<Violation>) -> ApiError {
    let detail = match code {
        "template_outdated" => "this is not the current users template; download it again",
        "template_column_missing" => "a template column was deleted; every column must stay",
        "too_many_rows" => "the file has more data rows than one import may carry",
        _ => "rows break their rules; nothing was imported",
    };
    ApiError::Invalid {
        code,
        detail: detail.into(),
        errors,
    }
}

/// Reads every non-empty row of an upload, CSV or XLSX (told apart by the bytes, not the
/// name). Stops reading once the row limit is clearly exceeded.
pub fn read_rows(bytes: &[u8]) -> Result<Vec<Row>, ApiError> {
    if bytes.starts_with(b"PK\x03\x04") {
        read_xlsx(bytes)
    } else {
        read_csv(bytes)
    }
}

/// Header rows + data rows + one more, so `too_many_rows` can still be told.
const ROWS_READ_MAX: usize = IMPORT_ROWS_MAX + 3;

fn read_csv(bytes: &[u8]) -> Result<Vec<Row>, ApiError> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| invalid_file(format!("CSV row {}: {e}", i + 1)))?;
        if record.len() > IMPORT_COLUMNS_MAX {
            return Err(invalid_file(format!(
                "row {} has more than {IMPORT_COLUMNS_MAX} columns",
                i + 1
            )));
        }
        let cells: Vec<String> = record.iter().map(str::to_string).collect();
        if cells.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        rows.push((i as u32 + 1, cells));
        if rows.len() >= ROWS_READ_MAX {
            break;
        }
    }
    Ok(rows)
}

fn read_xlsx(bytes: &[u8]) -> Result<Vec<Row>, ApiError> {
    // Zip-bomb guard: check the archive's declared sizes before anything inflates.
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| invalid_file(format!("not a valid XLSX: {e}")))?;
    if archive.len() > XLSX_ENTRIES_MAX {
        return Err(invalid_file("the XLSX has too many parts"));
    }
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| invalid_file(format!("not a valid XLSX: {e}")))?;
        total = total.saturating_add(entry.size());
    }
    if total > XLSX_UNCOMPRESSED_BYTES_MAX {
        return Err(invalid_file(
            "the XLSX expands to more than an import may hold",
        ));
    }
    let mut workbook: Xlsx<_> = calamine::open_workbook_from_rs(Cursor::new(bytes))
        .map_err(|e| invalid_file(format!("not a valid XLSX: {e}")))?;
    let range = workbook
        .worksheet_range_at(0)
        .ok_or_else(|| invalid_file("the XLSX has no sheet"))?
        .map_err(|e| invalid_file(format!("the first sheet cannot be read: {e}")))?;
    let (first_row, first_col) = range.start().unwrap_or((0, 0));
    if range.width() + first_col as usize > IMPORT_COLUMNS_MAX {
        return Err(invalid_file(format!(
            "the sheet has more than {IMPORT_COLUMNS_MAX} columns"
        )));
    }
    let mut rows = Vec::new();
    for (i, row) in range.rows().enumerate() {
        // Cells left of the used range are empty; keep column positions true.
        let mut cells = vec![String::new(); first_col as usize];
        cells.extend(row.iter().map(cell_text));
        if cells.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        rows.push((first_row + i as u32 + 1, cells));
        if rows.len() >= ROWS_READ_MAX {
            break;
        }
    }
    Ok(rows)
}

fn cell_text(cell: &Data) -> String {
    match cell {
        Data::Empty => String::new(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        // Numbers typed into non-text cells (phones, numbers): print integers plainly.
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        Data::Float(f) => f.to_string(),
        Data::Int(i) => i.to_string(),
        Data::Bool(b) => b.to_string(),
        Data::DateTime(d) => d.to_string(),
        Data::Error(e) => format!("#{e:?}"),
    }
}

/// A data row with its cells by column key.
#[derive(Debug)]
pub struct RawRow {
    pub row: u32,
    cells: HashMap<&'static str, String>,
}

impl RawRow {
    fn get(&self, key: &str) -> &str {
        self.cells.get(key).map(|s| s.trim()).unwrap_or("")
    }
}

/// Checks the two header rows and the row count; returns the data rows by column key.
pub fn parse_template(rows: Vec<Row>) -> Result<Vec<RawRow>, ApiError> {
    let mut rows = rows.into_iter();
    let mut header_errors = Vec::new();
    let fail = |errors: &mut Vec<Violation>, field: &str, rule: &str, message: String, row: u32| {
        errors.push(Violation {
            field: field.into(),
            rule: rule.into(),
            message,
            row: Some(row),
        });
    };
    let (marker_row, marker) = rows.next().unwrap_or((1, Vec::new()));
    let (keys_row, keys) = rows.next().unwrap_or((2, Vec::new()));
    let cell = |cells: &Vec<String>, i: usize| {
        cells
            .get(i)
            .map(|c| c.trim().to_string())
            .unwrap_or_default()
    };
    if cell(&marker, 0) != TEMPLATE_MARKER {
        fail(
            &mut header_errors,
            "template",
            "template_outdated",
            format!("row 1 must start with '{TEMPLATE_MARKER}': download the current template"),
            marker_row,
        );
    } else if cell(&marker, 1) != TEMPLATE_VERSION {
        fail(
            &mut header_errors,
            "template",
            "template_outdated",
            format!(
                "template version {:?} is not the current {TEMPLATE_VERSION}: download it again",
                cell(&marker, 1)
            ),
            marker_row,
        );
    }
    let mut positions: HashMap<&'static str, usize> = HashMap::new();
    let mut seen = HashSet::new();
    for (i, key) in keys.iter().enumerate() {
        let key = key.trim();
        if key.is_empty() {
            continue;
        }
        match COLUMNS.iter().find(|c| **c == key) {
            Some(known) if seen.insert(*known) => {
                positions.insert(known, i);
            }
            Some(_) => fail(
                &mut header_errors,
                key,
                "template_column_duplicate",
                format!("column {key} appears twice"),
                keys_row,
            ),
            None => fail(
                &mut header_errors,
                key,
                "template_column_unknown",
                format!("column {key:?} is not in the template"),
                keys_row,
            ),
        }
    }
    for key in COLUMNS {
        if !positions.contains_key(key) {
            fail(
                &mut header_errors,
                key,
                "template_column_missing",
                format!("column {key} was deleted; it must stay, even if empty"),
                keys_row,
            );
        }
    }
    if let Some(first) = header_errors.first() {
        let code = match first.rule.as_str() {
            "template_outdated" => "template_outdated",
            _ => "template_column_missing",
        };
        // Report the most telling code first; the list carries every reason.
        let code = if header_errors.iter().any(|e| e.rule == "template_outdated") {
            "template_outdated"
        } else {
            code
        };
        return Err(refusal(code, header_errors));
    }
    let data: Vec<Row> = rows.collect();
    if data.len() > IMPORT_ROWS_MAX {
        return Err(refusal(
            "too_many_rows",
            vec![Violation {
                field: "file".into(),
                rule: "too_many_rows".into(),
                message: format!("more than {IMPORT_ROWS_MAX} data rows"),
                row: None,
            }],
        ));
    }
    Ok(data
        .into_iter()
        .map(|(row, cells)| RawRow {
            row,
            cells: positions
                .iter()
                .map(|(k, i)| (*k, cells.get(*i).cloned().unwrap_or_default()))
                .collect(),
        })
        .collect())
}

/// Validates every row against the field rules and the tenant's departments, tags and
/// identity types (`identities`: their names; empty while it defines none, when any text
/// is taken); returns the users to apply, or every violation with its row.
pub fn build_users(
    rows: &[RawRow],
    departments: &HashMap<String, DepartmentId>,
    tags: &HashMap<String, TagId>,
    identities: &[String],
    keys: &Keys,
) -> Result<Vec<NewUser>, ApiError> {
    let mut c = Checks::new();
    let mut users = Vec::with_capacity(rows.len());
    let mut numbers: HashMap<String, u32> = HashMap::with_capacity(rows.len());
    for raw in rows {
        c.at_row(Some(raw.row));
        let before = c.violations.len();
        for key in COLUMNS {
            if raw.get(key).len() > IMPORT_CELL_BYTES_MAX {
                c.fail(
                    key,
                    "max_length",
                    format!("cells are at most {IMPORT_CELL_BYTES_MAX} bytes"),
                );
            }
        }
        if c.violations.len() > before {
            continue;
        }
        let (name, number) = (raw.get("name"), raw.get("number"));
        rules::check_name(&mut c, "name", name);
        rules::check_number(&mut c, "number", number);
        if !number.is_empty() {
            if let Some(first) = numbers.insert(number.to_string(), raw.row) {
                c.fail(
                    "number",
                    "unique",
                    format!("number {number} is also on row {first}"),
                );
            }
        }
        let phone = Some(raw.get("phone"))
            .filter(|p| !p.is_empty())
            .and_then(|p| rules::check_phone(&mut c, "phone", p));
        let id_number = Some(raw.get("id_number"))
            .filter(|p| !p.is_empty())
            .and_then(|p| rules::check_id_number(&mut c, "id_number", p))
            .map(|n| IdNumber {
                hash: keys.id_number_hash(&n),
                last4: rules::id_last4(&n),
            });
        let identity = Some(raw.get("identity"))
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        if let Some(identity) = &identity {
            rules::check_identity(&mut c, "identity", identity);
            if !identities.is_empty() && !identities.contains(identity) {
                c.fail(
                    "identity",
                    "identity_type",
                    format!("no identity type {identity:?}"),
                );
            }
        }
        let mut department_ids = Vec::new();
        let path = raw.get("department");
        if !path.is_empty() {
            let normalized = rules::split_department_path(path).join("/");
            match departments.get(&normalized) {
                Some(id) => department_ids.push(*id),
                None => c.fail(
                    "department",
                    "exists",
                    format!("no department {normalized:?}"),
                ),
            }
        }
        let mut tag_ids = Vec::new();
        for name in raw
            .get("tags")
            .split(';')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            match tags.get(name) {
                Some(id) => tag_ids.push(*id),
                None => c.fail("tags", "exists", format!("no tag {name:?}")),
            }
        }
        if c.violations.len() == before {
            users.push(NewUser {
                id: UserId::new(),
                name: name.to_string(),
                number: number.to_string(),
                phone,
                id_number,
                identity,
                department_ids,
                tag_ids,
            });
        }
    }
    if c.is_ok() {
        Ok(users)
    } else {
        Err(refusal("invalid_rows", c.violations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::derive(&[9u8; 32]).unwrap()
    }

    fn csv(body: &str) -> Vec<u8> {
        format!(
            "{TEMPLATE_MARKER},{TEMPLATE_VERSION}\n{}\n{body}",
            COLUMNS.join(",")
        )
        .into_bytes()
    }

    fn code(e: &ApiError) -> &'static str {
        e.code()
    }

    #[test]
    fn the_csv_template_parses_as_an_empty_import() {
        let rows = parse_template(read_rows(&template_csv()).unwrap()).unwrap();
        assert!(rows.is_empty());
    }

    #[test]
    fn the_xlsx_template_parses_as_an_empty_import() {
        let bytes = template_xlsx().unwrap();
        let rows = parse_template(read_rows(&bytes).unwrap()).unwrap();
        assert!(rows.is_empty());
    }

    #[test]
    fn an_old_version_is_refused_as_outdated() {
        let old = format!("{TEMPLATE_MARKER},v0\n{}\n", COLUMNS.join(","));
        let e = parse_template(read_rows(old.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(code(&e), "template_outdated");
    }

    #[test]
    fn a_deleted_column_is_named() {
        let cols: Vec<_> = COLUMNS.iter().filter(|c| **c != "phone").copied().collect();
        let file = format!(
            "{TEMPLATE_MARKER},{TEMPLATE_VERSION}\n{}\nA,1,,,,,\n",
            cols.join(",")
        );
        let e = parse_template(read_rows(file.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(code(&e), "template_column_missing");
        let p = e.problem();
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].field, "phone");
    }

    #[test]
    fn rows_beyond_ten_thousand_are_refused() {
        let body: String = (0..=IMPORT_ROWS_MAX)
            .map(|i| format!("N,{i},,,,,\n"))
            .collect();
        let e = parse_template(read_rows(&csv(&body)).unwrap()).unwrap_err();
        assert_eq!(code(&e), "too_many_rows");
        let body: String = (0..IMPORT_ROWS_MAX)
            .map(|i| format!("N,{i},,,,,\n"))
            .collect();
        assert_eq!(
            parse_template(read_rows(&csv(&body)).unwrap())
                .unwrap()
                .len(),
            IMPORT_ROWS_MAX
        );
    }

    #[test]
    fn every_bad_row_is_listed_with_row_field_and_rule() {
        let body = "Good,S1,,,,,\n,S2,,,,,\nBad phone,S3,12ab,,,,\nDup,S1,,,Nowhere,ghost,\n";
        let rows = parse_template(read_rows(&csv(body)).unwrap()).unwrap();
        let e = build_users(&rows, &HashMap::new(), &HashMap::new(), &[], &keys()).unwrap_err();
        assert_eq!(code(&e), "invalid_rows");
        let got: Vec<(u32, String, String)> = e
            .problem()
            .errors
            .into_iter()
            .map(|v| (v.row.unwrap(), v.field, v.rule))
            .collect();
        assert_eq!(
            got,
            [
                (4, "name".into(), "required".into()),
                (5, "phone".into(), "pattern".into()),
                (6, "number".into(), "unique".into()),
                (6, "department".into(), "exists".into()),
                (6, "tags".into(), "exists".into()),
            ]
        );
    }

    #[test]
    fn columns_may_come_in_any_order_and_paths_resolve() {
        let file = format!(
            "{TEMPLATE_MARKER},{TEMPLATE_VERSION}\nnumber,name,tags,department,identity,id_number,phone\nS9,Li Lei,a; b,Teaching / Maths,student,11010519491231002x,138 0000 0000\n"
        );
        let rows = parse_template(read_rows(file.as_bytes()).unwrap()).unwrap();
        let d = DepartmentId::new();
        let (a, b) = (TagId::new(), TagId::new());
        let depts = HashMap::from([("Teaching/Maths".to_string(), d)]);
        let tags = HashMap::from([("a".to_string(), a), ("b".to_string(), b)]);
        let users = build_users(&rows, &depts, &tags, &[], &keys()).unwrap();
        let u = &users[0];
        assert_eq!((u.name.as_str(), u.number.as_str()), ("Li Lei", "S9"));
        assert_eq!(u.department_ids, vec![d]);
        assert_eq!(u.tag_ids, vec![a, b]);
        assert_eq!(u.phone.as_deref(), Some("13800000000"));
        assert_eq!(u.id_number.as_ref().unwrap().last4, "002X");
    }

    #[test]
    fn garbage_and_non_utf8_files_are_refused_not_panicked_on() {
        assert!(read_rows(b"PK\x03\x04garbage").is_err());
        let bad_utf8 = [b'a', b',', 0xff, 0xfe, b'\n'];
        assert_eq!(code(&read_rows(&bad_utf8).unwrap_err()), "invalid_file");
    }
}
