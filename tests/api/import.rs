//! Spreadsheet import: every refusal rule, atomicity, XLSX, and a 10,000-row file.

use serde_json::json;

use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::on_both_engines;

const HEADER: &str =
    "onecard-users-template,v1\nname,number,phone,id_number,department,tags,identity\n";

fn csv(rows: &str) -> Vec<u8> {
    format!("{HEADER}{rows}").into_bytes()
}

fn xlsx(rows: &[[&str; 7]], version: &str) -> Vec<u8> {
    let mut wb = rust_xlsxwriter::Workbook::new();
    let sheet = wb.add_worksheet();
    sheet.write_string(0, 0, "onecard-users-template").unwrap();
    sheet.write_string(0, 1, version).unwrap();
    for (c, key) in [
        "name",
        "number",
        "phone",
        "id_number",
        "department",
        "tags",
        "identity",
    ]
    .iter()
    .enumerate()
    {
        sheet.write_string(1, c as u16, *key).unwrap();
    }
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            if !cell.is_empty() {
                sheet.write_string(r as u32 + 2, c as u16, *cell).unwrap();
            }
        }
    }
    wb.save_to_buffer().unwrap()
}

async fn count_users(app: &TestApp, admin: &str) -> usize {
    let mut n = 0;
    let mut cursor = String::new();
    loop {
        let (_, page) = app
            .get(&format!("/api/v1/users?limit=500{cursor}"), admin)
            .await;
        n += page["items"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return n,
        }
    }
}

on_both_engines!(ten_thousand_rows_import_atomically_and_update_by_number);

async fn ten_thousand_rows_import_atomically_and_update_by_number(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let (_, d) = app
        .post("/api/v1/departments", &admin, json!({"name": "Teaching"}))
        .await;
    app.post(
        "/api/v1/departments",
        &admin,
        json!({"name": "Maths", "parent_id": d["id"]}),
    )
    .await;
    app.post("/api/v1/tags", &admin, json!({"name": "boarder"}))
        .await;
    let mut rows = String::new();
    for i in 0..10_000 {
        rows.push_str(&format!("Student {i},S{i:05},1380000{i:04},1101051949123{i:05},Teaching/Maths,boarder,student\n"));
    }
    let (s, out) = app.upload(&admin, "users.csv", csv(&rows)).await;
    assert_eq!(s, 201, "{out}");
    assert_eq!(
        out,
        json!({"imported": 10_000, "created": 10_000, "updated": 0})
    );
    assert_eq!(count_users(&app, &admin).await, 10_000);
    let (_, one) = app.get("/api/v1/users?q=S09999", &admin).await;
    let u = &one["items"][0];
    assert_eq!(
        (
            u["name"].as_str(),
            u["id_number"].as_str(),
            u["identity"].as_str()
        ),
        (Some("Student 9999"), Some("****9999"), Some("student"))
    );
    assert_eq!(u["department_ids"].as_array().unwrap().len(), 1);
    assert_eq!(u["tag_ids"].as_array().unwrap().len(), 1);

    // Re-importing a number updates that user; empty optional cells keep their values.
    let (s, out) = app
        .upload(
            &admin,
            "users.csv",
            csv("Renamed,S09999,,,,,\nNew person,N00001,,,,,\n"),
        )
        .await;
    assert_eq!(s, 201, "{out}");
    assert_eq!(out, json!({"imported": 2, "created": 1, "updated": 1}));
    let (_, one) = app.get("/api/v1/users?q=S09999", &admin).await;
    let u = &one["items"][0];
    assert_eq!(
        (
            u["name"].as_str(),
            u["phone"].as_str(),
            u["id_number"].as_str()
        ),
        (Some("Renamed"), Some("13800009999"), Some("****9999"))
    );
    assert_eq!(u["tag_ids"].as_array().unwrap().len(), 1);
    assert_eq!(count_users(&app, &admin).await, 10_001);
}

#[actix_web::test]
async fn an_outdated_template_is_refused() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let old = "onecard-users-template,v0\nname,number,phone,id_number,department,tags,identity\nA,1,,,,,\n";
    let (s, body) = app.upload(&admin, "old.csv", old.as_bytes().to_vec()).await;
    assert_problem(s, &body, 422, "template_outdated");
    let (s, body) = app
        .upload(
            &admin,
            "old.xlsx",
            xlsx(&[["A", "1", "", "", "", "", ""]], "v0"),
        )
        .await;
    assert_problem(s, &body, 422, "template_outdated");
    let (s, body) = app
        .upload(&admin, "random.csv", b"name,number\nA,1\n".to_vec())
        .await;
    assert_problem(s, &body, 422, "template_outdated");
    assert_eq!(count_users(&app, &admin).await, 0);
}

#[actix_web::test]
async fn a_deleted_column_is_refused_naming_every_missing_column() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let file = "onecard-users-template,v1\nname,number,department,tags\nA,1,,\n";
    let (s, body) = app
        .upload(&admin, "cut.csv", file.as_bytes().to_vec())
        .await;
    assert_problem(s, &body, 422, "template_column_missing");
    let missing: Vec<_> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(missing, ["phone", "id_number", "identity"]);
    assert!(body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["rule"] == "template_column_missing" && e["row"] == 2));
}

#[actix_web::test]
async fn more_than_ten_thousand_rows_are_refused() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let rows: String = (0..10_001).map(|i| format!("P,{i},,,,,\n")).collect();
    let (s, body) = app.upload(&admin, "big.csv", csv(&rows)).await;
    assert_problem(s, &body, 422, "too_many_rows");
    assert_eq!(count_users(&app, &admin).await, 0);
}

#[actix_web::test]
async fn one_invalid_row_refuses_the_whole_file_listing_every_error() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    app.user(&admin, "EXISTS").await;
    let rows = "Good,G1,,,,,\n,G2,,,,,\nBad,G3,notaphone,,,,\nDup,G1,,,Nowhere,,\nAlso bad,G4,,12,,ghost,\n";
    let (s, body) = app.upload(&admin, "bad.csv", csv(rows)).await;
    assert_problem(s, &body, 422, "invalid_rows");
    let errors: Vec<(u64, String, String)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["row"].as_u64().unwrap(),
                e["field"].as_str().unwrap().into(),
                e["rule"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (4, "name".into(), "required".into()),
            (5, "phone".into(), "pattern".into()),
            (6, "number".into(), "unique".into()),
            (6, "department".into(), "exists".into()),
            (7, "id_number".into(), "pattern".into()),
            (7, "tags".into(), "exists".into()),
        ]
    );
    assert_eq!(
        count_users(&app, &admin).await,
        1,
        "nothing was imported, not even the good row"
    );
}

#[actix_web::test]
async fn xlsx_uploads_import_like_csv_and_the_template_downloads_in_both_formats() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let (s, out) = app
        .upload(
            &admin,
            "u.xlsx",
            xlsx(
                &[
                    ["Li Lei", "X1", "13800000000", "", "", "", "student"],
                    ["Han Meimei", "X2", "", "", "", "", ""],
                ],
                "v1",
            ),
        )
        .await;
    assert_eq!(s, 201, "{out}");
    assert_eq!(out["created"], 2);

    for (format, kind) in [("csv", "text/csv"), ("xlsx", "spreadsheetml")] {
        let res = app
            .client
            .get(app.url(&format!("/api/v1/users/import/template?format={format}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains(kind));
        let template = res.bytes().await.unwrap().to_vec();
        // The downloaded template, uploaded untouched, is a valid (empty) import.
        let (s, out) = app.upload(&admin, &format!("t.{format}"), template).await;
        assert_eq!((s, out["imported"].as_u64()), (201, Some(0)), "{out}");
    }
    let (s, body) = app
        .get("/api/v1/users/import/template?format=pdf", &admin)
        .await;
    assert_problem(s, &body, 422, "invalid");
}

#[actix_web::test]
async fn uploads_that_are_not_spreadsheets_too_big_or_zip_bombs_are_refused() {
    let Some(app) = spawn_app(Engine::Sqlite).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    let (s, body) = app
        .upload(&admin, "x.xlsx", b"PK\x03\x04 not really a zip".to_vec())
        .await;
    assert_problem(s, &body, 422, "invalid_file");

    let huge = vec![b'a'; 17 * 1024 * 1024];
    let (s, body) = app.upload(&admin, "huge.csv", huge).await;
    assert_problem(s, &body, 413, "too_large");

    // 200 MiB of zeros deflate to a few hundred KiB: refused before anything inflates.
    let mut bomb = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut bomb);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("xl/worksheets/sheet1.xml", opts).unwrap();
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..200 {
            std::io::Write::write_all(&mut zip, &zeros).unwrap();
        }
        zip.finish().unwrap();
    }
    let (s, body) = app.upload(&admin, "bomb.xlsx", bomb.into_inner()).await;
    assert_problem(s, &body, 422, "invalid_file");

    let res = app
        .client
        .post(app.url("/api/v1/users/import"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    assert_eq!(count_users(&app, &admin).await, 0);
}
