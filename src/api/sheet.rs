//! Records as a file to download (the ride and maintenance exports): CSV, or an XLSX
//! workbook with a title line, the column names and a count beneath.

use actix_web::{web, HttpResponse};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use utoipa::ToSchema;

use super::attachment;
use super::reports::csv_text;
use crate::import::XLSX_MIME;
use crate::problem::ApiError;

/// The longest window one export covers (rides, maintenance records), and the most rows
/// it holds.
pub const EXPORT_DAYS_MAX: i64 = 31;
pub const EXPORT_ROWS_MAX: usize = 200_000;

/// An export's window: `to` after `from`, at most `EXPORT_DAYS_MAX` days later.
pub fn check_export_window(from: Timestamp, to: Timestamp) -> Result<(), ApiError> {
    check_period(from, to, EXPORT_DAYS_MAX)
}

/// A period asked for (`from`, `to`): `to` after `from`, at most `days_max` days later.
pub fn check_period(from: Timestamp, to: Timestamp, days_max: i64) -> Result<(), ApiError> {
    if to <= from {
        return Err(ApiError::invalid_field("to", "after", "must be after from"));
    }
    if to.duration_since(from) > SignedDuration::from_hours(24 * days_max) {
        return Err(ApiError::invalid_field(
            "to",
            "range",
            format!("at most {days_max} days after from"),
        ));
    }
    Ok(())
}

/// The window a file covers, and the zone its times are shown in (the tenant's).
pub struct ExportWindow {
    pub from: Timestamp,
    pub to: Timestamp,
    pub tz: TimeZone,
}

impl ExportWindow {
    fn local(&self, t: Timestamp, format: &str) -> String {
        t.to_zoned(self.tz.clone()).strftime(format).to_string()
    }

    /// A row's time: `YYYY-MM-DD HH:MM:SS` in the window's zone.
    pub fn at(&self, t: Timestamp) -> String {
        self.local(t, "%Y-%m-%d %H:%M:%S")
    }

    /// A file's title line: `{what} {from} to {to} ({zone})`.
    pub fn title(&self, what: &str) -> String {
        format!(
            "{what} {} to {} ({})",
            self.local(self.from, "%Y-%m-%d %H:%M"),
            self.local(self.to, "%Y-%m-%d %H:%M"),
            self.tz.iana_name().unwrap_or("UTC")
        )
    }

    /// A file's name without its extension: `onecard-{what}-{from's YYYYMMDD}`.
    pub fn stem(&self, what: &str) -> String {
        format!("onecard-{what}-{}", self.local(self.from, "%Y%m%d"))
    }
}

/// How a sheet is downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SheetFormat {
    Csv,
    Xlsx,
}

/// A table of text to download.
pub struct Sheet {
    /// The XLSX's first line (what, when, in which time zone).
    pub title: String,
    /// The XLSX worksheet's name.
    pub name: &'static str,
    pub columns: &'static [&'static str],
    /// Columns of money, in fen: the CSV keeps fen (as the reports' CSVs do), the XLSX
    /// shows yuan as numbers and their total beneath.
    pub money_columns: &'static [usize],
    pub rows: Vec<Vec<String>>,
    /// What one row is, for the XLSX's count line ("rides").
    pub noun: &'static str,
}

impl Sheet {
    /// The sheet as `format`, saved as `<stem>.csv` or `<stem>.xlsx`.
    pub async fn download(self, format: SheetFormat, stem: &str) -> Result<HttpResponse, ApiError> {
        let (body, mime, ext) = match format {
            SheetFormat::Csv => (self.csv(), "text/csv; charset=utf-8", "csv"),
            SheetFormat::Xlsx => {
                let bytes = web::block(move || self.xlsx())
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(ApiError::internal)?;
                (bytes, XLSX_MIME, "xlsx")
            }
        };
        Ok(attachment(body, mime, &format!("{stem}.{ext}")))
    }

    /// Text a spreadsheet would run as a formula is quoted as text; a money column's
    /// number, negative ones too, stays a number.
    fn csv(&self) -> Vec<u8> {
        let mut w = csv::Writer::from_writer(Vec::new());
        // Writing to a Vec cannot fail.
        let _ = w.write_record(self.columns);
        for r in &self.rows {
            let cells = r.iter().enumerate().map(|(c, cell)| {
                if self.money_columns.contains(&c) && cell.parse::<i64>().is_ok() {
                    cell.clone()
                } else {
                    csv_text(cell)
                }
            });
            let _ = w.write_record(cells);
        }
        w.into_inner().unwrap_or_default()
    }

    fn xlsx(&self) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
        use rust_xlsxwriter::{Format, Workbook};
        let mut wb = Workbook::new();
        let bold = Format::new().set_bold();
        let sheet = wb.add_worksheet();
        sheet.set_name(self.name)?;
        sheet.write_string_with_format(0, 0, &self.title, &bold)?;
        for (i, c) in self.columns.iter().enumerate() {
            sheet.write_string_with_format(2, i as u16, *c, &bold)?;
            sheet.set_column_width(i as u16, 20)?;
        }
        let yuan = Format::new().set_num_format("#,##0.00");
        let mut totals = vec![0i64; self.columns.len()];
        // Strings, never formulas: a cell that starts with "=" stays text.
        for (r, row) in self.rows.iter().enumerate() {
            for (c, cell) in row.iter().enumerate() {
                let (r, col) = (3 + r as u32, c as u16);
                match cell.parse::<i64>() {
                    Ok(fen) if self.money_columns.contains(&c) => {
                        totals[c] += fen;
                        sheet.write_number_with_format(r, col, fen as f64 / 100.0, &yuan)?;
                    }
                    _ => {
                        sheet.write_string(r, col, cell)?;
                    }
                }
            }
        }
        let r = 3 + self.rows.len() as u32;
        let count = format!("{} {}", self.rows.len(), self.noun);
        sheet.write_string_with_format(r, 0, count, &bold)?;
        let yuan_bold = Format::new().set_num_format("#,##0.00").set_bold();
        for &c in self.money_columns {
            let total = totals.get(c).copied().unwrap_or(0) as f64 / 100.0;
            sheet.write_number_with_format(r, c as u16, total, &yuan_bold)?;
        }
        wb.save_to_buffer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sheet() -> Sheet {
        Sheet {
            title: "Rides".into(),
            name: "rides",
            columns: &["at", "name"],
            money_columns: &[],
            rows: vec![vec!["2026-12-07 08:00:00".into(), "=cmd()".into()]],
            noun: "rides",
        }
    }

    #[test]
    fn a_csv_keeps_a_formula_as_text() {
        let text = String::from_utf8(sheet().csv()).unwrap();
        assert_eq!(text, "at,name\n2026-12-07 08:00:00,'=cmd()\n");
    }

    #[test]
    fn an_xlsx_is_a_workbook() {
        assert!(sheet().xlsx().unwrap().starts_with(b"PK"));
    }

    #[test]
    fn money_stays_fen_in_a_csv_and_is_yuan_with_a_total_in_an_xlsx() {
        use calamine::{Data, Reader, Xlsx};
        let money = Sheet {
            title: "Withdrawals".into(),
            name: "withdrawals",
            columns: &["number", "amount"],
            money_columns: &[1],
            rows: vec![
                vec!["G-1".into(), "1234".into()],
                vec!["G-2".into(), "66".into()],
                vec!["-G".into(), "-300".into()],
            ],
            noun: "withdrawals",
        };
        let text = String::from_utf8(money.csv()).unwrap();
        assert_eq!(
            text, "number,amount\nG-1,1234\nG-2,66\n'-G,-300\n",
            "a negative amount stays a number; text that starts with '-' does not"
        );
        let bytes = money.xlsx().unwrap();
        let mut book: Xlsx<_> =
            calamine::open_workbook_from_rs(std::io::Cursor::new(bytes)).unwrap();
        let range = book.worksheet_range("withdrawals").unwrap();
        let cell = |r: u32, c: u32| range.get_value((r, c)).cloned().unwrap_or(Data::Empty);
        assert_eq!(cell(3, 0), Data::String("G-1".into()), "not money: text");
        assert_eq!(cell(3, 1), Data::Float(12.34));
        assert_eq!(cell(4, 1), Data::Float(0.66));
        assert_eq!(cell(5, 1), Data::Float(-3.0));
        assert_eq!(cell(6, 0), Data::String("3 withdrawals".into()));
        assert_eq!(cell(6, 1), Data::Float(10.0), "the total");
    }
}
