//! Statements: a cardholder's every movement of money, newest first, for themselves and
//! for the finance office; pages that neither skip nor repeat a line; and a statement
//! that adds up to the wallet.

use std::io::Cursor;

use calamine::{Data, Reader, Xlsx};
use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::money::{
    approved_rule, code, keyed, ledger_balances, pay, person, set_sandbox, shop, top_up,
};
use crate::on_both_engines;
use crate::reports::download;

on_both_engines!(a_statement_lists_every_movement_and_adds_up_to_the_wallet,);

/// Every line of `path`, page by page (`limit` a page), and the pages' sizes.
pub(crate) async fn all_lines(
    app: &TestApp,
    path: &str,
    token: &str,
    limit: u32,
) -> (Vec<Value>, Vec<usize>) {
    let (mut lines, mut sizes, mut cursor) = (Vec::new(), Vec::new(), None::<String>);
    loop {
        let join = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{join}limit={limit}&cursor={c}"),
            None => format!("{path}{join}limit={limit}"),
        };
        let (s, page) = app.get(&url, token).await;
        assert_eq!(s, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        sizes.push(items.len());
        lines.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (lines, sizes),
        }
        assert!(sizes.len() < 100, "the pages never end");
    }
}

async fn refund(app: &TestApp, admin: &str, payment: &str, body: Value) -> Value {
    let key = uuid::Uuid::new_v4().to_string();
    let (s, r) = keyed(
        app,
        &format!("/api/v1/payments/{payment}/refunds"),
        admin,
        &key,
        body,
    )
    .await;
    assert_eq!(s, 201, "{r}");
    r
}

fn amount(line: &Value) -> i64 {
    line["amount"].as_i64().unwrap()
}

async fn a_statement_lists_every_movement_and_adds_up_to_the_wallet(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let shop = shop(&app, 100_000).await;
    let (user, me) = person(&app, &shop.admin, "S-1").await;
    // Someone else's money never shows on S-1's statement.
    let (other, _) = person(&app, &shop.admin, "S-2").await;
    top_up(&app, &shop, &other, 77).await;

    top_up(&app, &shop, &user, 1_000).await;
    let soon = (app.clock_now() + SignedDuration::from_hours(24)).to_string();
    let (s, c) = app
        .post(
            &format!("/api/v1/users/{user}/wallet/coupons"),
            &shop.admin,
            json!({"name": "Soon", "discount": 100, "threshold": 0, "expires_at": soon}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let rule = json!({"name": "Meal", "amount": 400, "targets": {"user_ids": [user]}, "merchant_ids": [shop.merchant]});
    assert_eq!(approved_rule(&app, &shop.admin, rule).await, 1);

    // 2,000 = coupon 100 + subsidy 400 + cash 1,000 + deferred 500, collected.
    let first_code = code(&app, &me).await;
    let big = pay(&app, &shop, &first_code, 2_000).await;
    let big_id = big["id"].as_str().unwrap().to_string();
    app.wait_for(&format!("/api/v1/payments/{big_id}"), &shop.admin, |p| {
        p["status"] == "succeeded"
    })
    .await;
    // 700 back: the deferred 500 through the provider, then 200 to cash.
    refund(&app, &shop.admin, &big_id, json!({"amount": 700})).await;
    // A replayed code: declined, and on the statement with its reason.
    let replay = pay(&app, &shop, &first_code, 10).await;
    assert_eq!(replay["decline_reason"], "code_reused", "{replay}");
    top_up(&app, &shop, &user, 50).await;
    // 300 = cash 250 + deferred 50, which the provider declines: 50 owed, then repaid.
    set_sandbox(&app, &shop.admin, &user, json!({"available": 0})).await;
    let owed = pay(&app, &shop, &code(&app, &me).await, 300).await;
    let owed_id = owed["id"].as_str().unwrap().to_string();
    app.wait_for(&format!("/api/v1/payments/{owed_id}"), &shop.admin, |p| {
        p["status"] == "unsettled"
    })
    .await;
    let (s, w) = keyed(&app, "/api/v1/me/arrears/repay", &me, "repay-1", json!({})).await;
    assert_eq!(s, 200, "{w}");
    // The rest of the first payment: cash 800, the subsidy 400 and the coupon.
    refund(&app, &shop.admin, &big_id, json!({})).await;

    let (lines, sizes) = all_lines(&app, "/api/v1/me/statement", &me, 500).await;
    assert_eq!(sizes, [lines.len()], "one page holds them all");
    let kinds: Vec<(&str, i64)> = lines
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), amount(l)))
        .collect();
    assert_eq!(
        kinds,
        [
            ("refund", 1_300),
            ("arrears_repaid", 50),
            ("arrears_opened", 50),
            ("payment", 300),
            ("top_up", 50),
            ("payment", 10),
            ("refund", 700),
            ("payment", 2_000),
            ("subsidy", 400),
            ("top_up", 1_000),
        ],
        "{lines:#?}"
    );
    let [last_refund, _, opened, owed_line, _, declined, first_refund, big_line, subsidy, _] =
        &lines[..]
    else {
        unreachable!()
    };
    assert_eq!(
        last_refund["returned"],
        json!({"coupon": 100, "subsidy": 400, "balance": 800, "deferred": 0})
    );
    assert_eq!(last_refund["not_revived"], 0);
    assert_eq!(
        first_refund["returned"],
        json!({"coupon": 0, "subsidy": 0, "balance": 200, "deferred": 500})
    );
    for r in [last_refund, first_refund] {
        assert_eq!(r["payment_id"], big_id.as_str(), "{r}");
        assert_eq!(
            r["merchant"],
            json!({"id": shop.merchant, "name": "North Hall"})
        );
    }
    assert_eq!(opened["payment_id"], owed_id.as_str(), "{opened}");
    assert_eq!(
        owed_line["payment"]["status"], "succeeded",
        "repaid: {owed_line}"
    );
    assert_eq!(
        (
            declined["payment"]["status"].as_str(),
            declined["payment"]["decline_reason"].as_str()
        ),
        (Some("declined"), Some("code_reused"))
    );
    assert_eq!(big_line["id"], big_id.as_str());
    assert_eq!(
        (
            big_line["payment"]["status"].as_str(),
            big_line["payment"]["refunded"].as_i64()
        ),
        (Some("refunded"), Some(2_000))
    );
    assert_eq!(big_line["merchant"]["name"], "North Hall");
    assert_eq!(subsidy["subsidy_account"]["name"], "Meal", "{subsidy}");
    assert!(lines.iter().all(|l| l["at"].is_string()), "{lines:#?}");

    // The statement adds up to the wallet: cash in from top-ups and refunds, out by
    // payments; subsidies in from rules and refunds, out by payments.
    let sum = |kind: &str, part: &dyn Fn(&Value) -> i64| -> i64 {
        lines.iter().filter(|l| l["kind"] == kind).map(part).sum()
    };
    let paid = |share: &'static str| {
        move |l: &Value| {
            if l["payment"]["status"] == "declined" {
                0
            } else {
                l["payment"]["breakdown"][share].as_i64().unwrap()
            }
        }
    };
    let cash = sum("top_up", &amount)
        + sum("refund", &|l| l["returned"]["balance"].as_i64().unwrap())
        - sum("payment", &paid("balance"));
    let subsidies = sum("subsidy", &amount)
        + sum("refund", &|l| l["returned"]["subsidy"].as_i64().unwrap())
        - sum("payment", &paid("subsidy"));
    let owed_now = sum("arrears_opened", &amount) - sum("arrears_repaid", &amount);
    let (_, w) = app.get("/api/v1/me/wallet", &me).await;
    assert_eq!(cash, w["balance"].as_i64().unwrap(), "{w}");
    assert_eq!(cash, 800);
    let live: i64 = w["subsidies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["balance"].as_i64().unwrap())
        .sum();
    assert_eq!(
        (subsidies, owed_now, w["arrears"].as_i64()),
        (live, 0, Some(0)),
        "{w}"
    );
    // Each line says what it did to the balance and the subsidies: their sums are the wallet.
    let sum_of = |field: &str| -> i64 { lines.iter().map(|l| l[field].as_i64().unwrap()).sum() };
    assert_eq!(
        (sum_of("cash"), sum_of("subsidy")),
        (800, live),
        "{lines:#?}"
    );

    // As a file: the same lines, oldest first, with what each did to the balance.
    let now = app.clock_now();
    let window = format!(
        "from={}&to={}",
        now - SignedDuration::from_hours(1),
        now + SignedDuration::from_secs(1)
    );
    let (mime, csv) = download(&app, &me, &format!("/api/v1/me/statement/export?{window}")).await;
    assert!(mime.starts_with("text/csv"), "{mime}");
    let mut reader = csv::Reader::from_reader(&csv[..]);
    assert_eq!(
        reader.headers().unwrap(),
        vec!["at", "kind", "amount", "cash", "subsidy", "merchant", "detail", "id"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let kinds_in_file: Vec<(&str, i64)> = rows
        .iter()
        .map(|r| (&r[1], r[2].parse().unwrap()))
        .collect();
    let mut oldest_first = kinds.clone();
    oldest_first.reverse();
    assert_eq!(kinds_in_file, oldest_first);
    let column_sum = |c: usize| -> i64 { rows.iter().map(|r| r[c].parse::<i64>().unwrap()).sum() };
    assert_eq!((column_sum(3), column_sum(4)), (800, live));
    let declined_row = rows.iter().find(|r| &r[2] == "10").unwrap();
    assert_eq!(&declined_row[6], "declined: code_reused");
    assert_eq!(&declined_row[5], "North Hall");
    // The office downloads the same file; the XLSX shows yuan with totals.
    let (_, theirs) = download(
        &app,
        &shop.admin,
        &format!("/api/v1/users/{user}/statement/export?{window}"),
    )
    .await;
    assert_eq!(theirs, csv);
    let (_, xlsx) = download(
        &app,
        &me,
        &format!("/api/v1/me/statement/export?{window}&format=xlsx"),
    )
    .await;
    let mut book: Xlsx<_> = calamine::open_workbook_from_rs(Cursor::new(xlsx)).unwrap();
    let sheet = book.worksheet_range("statement").unwrap();
    let cell = |r: u32, c: u32| sheet.get_value((r, c)).cloned().unwrap_or(Data::Empty);
    let title = cell(0, 0).to_string();
    assert!(title.contains("(S-1)"), "{title}");
    assert_eq!(cell(3, 1), Data::String("top_up".into()));
    assert_eq!(cell(3, 3), Data::Float(10.0), "1,000 fen in, in yuan");
    assert_eq!(cell(13, 0), Data::String("10 lines".into()));
    assert_eq!(
        cell(13, 3),
        Data::Float(8.0),
        "the balance's change over the window"
    );
    // A window before it all is empty; bad windows and other people's are refused.
    let before = format!(
        "from={}&to={}",
        now - SignedDuration::from_hours(2),
        now - SignedDuration::from_hours(1)
    );
    let (_, empty) = download(&app, &me, &format!("/api/v1/me/statement/export?{before}")).await;
    assert_eq!(
        String::from_utf8(empty).unwrap().lines().count(),
        1,
        "the header alone"
    );
    for bad in [
        format!("from={}&to={}", now, now - SignedDuration::from_hours(1)),
        format!(
            "from={}&to={}",
            now - SignedDuration::from_hours(24 * 367),
            now
        ),
        format!("{window}&format=pdf"),
        format!("to={now}"),
    ] {
        let (s, body) = app
            .get(&format!("/api/v1/me/statement/export?{bad}"), &me)
            .await;
        assert!(s == 422 || s == 400, "{bad}: {s} {body}");
    }

    // Pages of 3 neither skip nor repeat a line, and the last says nothing follows.
    let (paged, sizes) = all_lines(&app, "/api/v1/me/statement", &me, 3).await;
    assert_eq!(sizes, [3, 3, 3, 1]);
    let ids = |ls: &[Value]| {
        ls.iter()
            .map(|l| l["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&paged), ids(&lines));
    // A page size that ends exactly at the last line still ends.
    let (_, sizes) = all_lines(&app, "/api/v1/me/statement", &me, 5).await;
    assert_eq!(sizes, [5, 5]);

    // The finance office reads the same statement; nobody reads another tenant's.
    let (admin_lines, _) = all_lines(
        &app,
        &format!("/api/v1/users/{user}/statement"),
        &shop.admin,
        4,
    )
    .await;
    assert_eq!(admin_lines, lines);
    let (_, stranger) = app.tenant("university", "standard").await;
    let (s, body) = app
        .get(&format!("/api/v1/users/{user}/statement"), &stranger)
        .await;
    assert_problem(s, &body, 404, "not_found");
    let (s, body) = app
        .get(&format!("/api/v1/users/{user}/statement"), &me)
        .await;
    assert_eq!(s, 403, "a cardholder reads only their own: {body}");
    for bad in ["limit=0", "limit=501", "cursor=nope"] {
        let (s, body) = app.get(&format!("/api/v1/me/statement?{bad}"), &me).await;
        assert_eq!(s, 422, "{bad}: {body}");
    }
    let (s, body) = app
        .get(
            &format!("/api/v1/users/{user}/statement/export?{window}"),
            &stranger,
        )
        .await;
    assert_problem(s, &body, 404, "not_found");
    let (s, _) = app
        .get(
            &format!("/api/v1/users/{user}/statement/export?{window}"),
            &me,
        )
        .await;
    assert_eq!(s, 403);
    let (_, other_lines) = app
        .get(&format!("/api/v1/users/{other}/statement"), &shop.admin)
        .await;
    assert_eq!(
        other_lines["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(amount)
            .collect::<Vec<_>>(),
        [77]
    );
    ledger_balances(&app, &shop.admin).await;
}
