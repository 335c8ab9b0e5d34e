//! Identity types, card products, the operator's review and claiming (SPEC §3–§4): who a
//! tenant's people are and how each proves it, cards with checked covers that only the
//! operator can approve, and claims that verify a person and activate their card.

use std::sync::{Arc, Mutex};

use actix_web::{web, HttpRequest, HttpResponse};
use jiff::SignedDuration;
use serde_json::{json, Value};

use crate::checkin::signed;
use crate::groups::{department, group, sub_admin};
use crate::helpers::{
    assert_problem, serve_local, signed_with, spawn_app, spawn_with, Engine, TestApp, ROOT_TOKEN,
};
use crate::on_both_engines;
use crate::realtime::Ws;
use crate::webhooks::{hooked_app, Receiver};

on_both_engines!(
    identity_types_name_who_people_are_and_stay_while_held,
    a_managing_identity_administers_its_departments_with_the_cards_token,
    codes_go_signed_to_the_operators_text_gateway,
    cards_are_claimable_only_once_the_operator_approves_them,
    a_claim_by_name_and_id_activates_the_card_on_one_phone,
    a_claim_by_phone_needs_the_code_texted_to_the_imported_phone,
    open_registration_proves_a_phone_and_finds_the_same_person_again,
    claim_modes_need_the_official_accounts_ticket,
    an_external_identity_endpoint_is_asked_signed,
);

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

/// Asks to create an identity type: (status, body).
async fn try_identity_type(app: &TestApp, admin: &str, body: Value) -> (u16, Value) {
    app.post("/api/v1/identity-types", admin, body).await
}

pub(crate) async fn identity_type(
    app: &TestApp,
    admin: &str,
    name: &str,
    verification: &str,
) -> Value {
    let body = json!({"name": name, "category": "other", "verification": verification});
    let (s, t) = try_identity_type(app, admin, body).await;
    assert_eq!(s, 201, "{t}");
    t
}

/// A 1000×600 PNG (or of the size given).
pub(crate) fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        let pixels: Vec<u8> = (0..width * height).map(|i| (i % 251) as u8).collect();
        writer.write_image_data(&pixels).unwrap();
    }
    out
}

/// The head of a baseline JPEG of `width`×`height` (start of image, JFIF, frame header):
/// what a cover check reads.
pub(crate) fn jpeg(width: u16, height: u16) -> Vec<u8> {
    let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
    b.extend_from_slice(b"JFIF\0");
    b.extend_from_slice(&[1, 1, 0, 0, 1, 0, 1, 0, 0]);
    b.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08]);
    b.extend_from_slice(&height.to_be_bytes());
    b.extend_from_slice(&width.to_be_bytes());
    b.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    b.extend_from_slice(&[0xFF, 0xD9]);
    b
}

async fn put_cover(app: &TestApp, admin: &str, card: &Value, bytes: Vec<u8>) -> (u16, Value) {
    put_image(
        app,
        admin,
        &format!("/api/v1/cards/{}/cover", id(card)),
        bytes,
    )
    .await
}

/// PUTs an image to `path` as a multipart field `file`: the status and the JSON answer.
pub(crate) async fn put_image(
    app: &TestApp,
    admin: &str,
    path: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let part = reqwest::multipart::Part::bytes(bytes).file_name("image.png");
    let res = app
        .client
        .put(app.url(path))
        .bearer_auth(admin)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A card for `types` in `mode`, with a cover, approved by the operator.
pub(crate) async fn approved_card(
    app: &TestApp,
    admin: &str,
    types: &[&Value],
    mode: &str,
) -> Value {
    let ids: Vec<String> = types.iter().map(|t| id(t)).collect();
    let (s, card) = app
        .post(
            "/api/v1/cards",
            admin,
            json!({"title": "Campus card", "subtitle": "campus_card",
                   "identity_type_ids": ids, "claim_mode": mode}),
        )
        .await;
    assert_eq!(s, 201, "{card}");
    let (s, card) = put_cover(app, admin, &card, png(1000, 600)).await;
    assert_eq!(s, 200, "{card}");
    let (s, card) = app
        .post(
            &format!("/api/v1/card-reviews/{}/approve", id(&card)),
            ROOT_TOKEN,
            json!({"revision": card["revision"]}),
        )
        .await;
    assert_eq!(s, 200, "{card}");
    card
}

async fn claim(app: &TestApp, tenant: &str, card: &Value, body: Value) -> (u16, Value) {
    app.send(
        reqwest::Method::POST,
        &format!("/api/v1/claim/{tenant}/cards/{}", id(card)),
        None,
        Some(body),
    )
    .await
}

async fn send_code(app: &TestApp, tenant: &str, itype: &Value, phone: &str) -> (u16, Value) {
    app.send(
        reqwest::Method::POST,
        &format!("/api/v1/claim/{tenant}/phone-codes"),
        None,
        Some(json!({"identity_type_id": id(itype), "phone": phone})),
    )
    .await
}

/// The codes the sandbox texted to `phone`, newest first.
async fn texted(app: &TestApp, admin: &str, phone: &str) -> Vec<String> {
    let texts = app.sandbox_texts(admin, phone).await;
    texts.into_iter().map(|t| t[..6].to_string()).collect()
}

async fn identity_types_name_who_people_are_and_stay_while_held(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "standard").await;
    // Before the tenant defines any type, any identity is taken, as it always was.
    let (s, early) = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"name": "Early", "number": "E1", "identity": "whatever"}),
        )
        .await;
    assert_eq!(s, 201, "{early}");
    let student = identity_type(&app, &admin, "student", "name_id").await;
    assert_eq!(student["verification"], "name_id");
    assert!(student["external_secret"].is_null());
    let (s, dup) = try_identity_type(
        &app,
        &admin,
        json!({"name": "student", "category": "student", "verification": "phone"}),
    )
    .await;
    assert_problem(s, &dup, 409, "identity_type_name_taken");
    let (s, bad) = try_identity_type(
        &app,
        &admin,
        json!({"name": "partner", "category": "other", "verification": "external"}),
    )
    .await;
    assert_problem(s, &bad, 422, "invalid");
    assert_eq!(bad["errors"][0]["field"], "external_url", "{bad}");
    let (s, bad) = try_identity_type(
        &app,
        &admin,
        json!({"name": "x", "category": "wizard", "verification": "phone"}),
    )
    .await;
    assert_eq!(s, 422, "{bad}");
    let alumni = identity_type(&app, &admin, "alumni", "registration").await;
    let teacher = identity_type(&app, &admin, "teacher", "phone").await;

    // Users carry a defined type's name, by form, patch and import alike.
    let (s, bad) = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"name": "Janitor", "number": "J1", "identity": "janitor"}),
        )
        .await;
    assert_problem(s, &bad, 422, "invalid");
    assert_eq!(bad["errors"][0]["rule"], "identity_type", "{bad}");
    let (s, held) = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"name": "Li", "number": "S1", "identity": "student"}),
        )
        .await;
    assert_eq!(s, 201, "{held}");
    let (s, bad) = app
        .patch(
            &format!("/api/v1/users/{}", id(&held)),
            &admin,
            json!({"identity": "janitor"}),
        )
        .await;
    assert_problem(s, &bad, 422, "invalid");
    let csv = "onecard-users-template,v1\nname,number,phone,id_number,department,tags,identity\n\
               A,I1,,,,,student\nB,I2,,,,,janitor\n";
    let (s, bad) = app.upload(&admin, "u.csv", csv.as_bytes().to_vec()).await;
    assert_problem(s, &bad, 422, "invalid_rows");
    assert_eq!(bad["errors"][0]["row"], 4, "{bad}");
    assert_eq!(bad["errors"][0]["field"], "identity", "{bad}");
    let (s, list) = app.get("/api/v1/users?q=I1", &admin).await;
    assert_eq!(
        (s, list["items"].as_array().unwrap().len()),
        (200, 0),
        "nothing imported"
    );

    // A type is deleted only while nobody holds it and no card names it.
    let (s, refused) = app
        .delete(&format!("/api/v1/identity-types/{}", id(&student)), &admin)
        .await;
    assert_problem(s, &refused, 409, "identity_in_use");
    assert!(
        refused["detail"].as_str().unwrap().contains("1 user"),
        "{refused}"
    );
    let (s, card) = app
        .post(
            "/api/v1/cards",
            &admin,
            json!({"title": "Staff card", "subtitle": "teacher_card",
                   "identity_type_ids": [id(&teacher)], "claim_mode": "open_link"}),
        )
        .await;
    assert_eq!(s, 201, "{card}");
    let (s, refused) = app
        .delete(&format!("/api/v1/identity-types/{}", id(&teacher)), &admin)
        .await;
    assert_problem(s, &refused, 409, "identity_in_use");
    assert!(
        refused["detail"].as_str().unwrap().contains("Staff card"),
        "{refused}"
    );
    let (s, _) = app
        .delete(&format!("/api/v1/identity-types/{}", id(&alumni)), &admin)
        .await;
    assert_eq!(s, 204);
    let (s, list) = app.get("/api/v1/identity-types", &admin).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["student", "teacher"]);

    // The name stays (users carry it); the method may change.
    let (s, changed) = app
        .patch(
            &format!("/api/v1/identity-types/{}", id(&student)),
            &admin,
            json!({"verification": "phone", "name": "pupil"}),
        )
        .await;
    assert_eq!(s, 422, "{changed}");
    let (s, changed) = app
        .patch(
            &format!("/api/v1/identity-types/{}", id(&student)),
            &admin,
            json!({"verification": "phone"}),
        )
        .await;
    assert_eq!(
        (s, &changed["verification"]),
        (200, &json!("phone")),
        "{changed}"
    );

    // Only those granted `identity` keep identity types.
    let clerk_user = app.user(&admin, "C1").await;
    let g = group(
        &app,
        &admin,
        json!({"name": "Cards", "features": {"cards": "manage"}}),
    )
    .await;
    let clerk = sub_admin(&app, &admin, &clerk_user, &g).await;
    let (s, refused) = app.get("/api/v1/identity-types", &clerk).await;
    assert_eq!(s, 403, "{refused}");
    let (s, cards) = app.get("/api/v1/cards", &clerk).await;
    assert_eq!(s, 200, "{cards}");
    // Other tenants see none of it.
    let (_, other) = app.tenant("university", "standard").await;
    let (s, _) = app
        .get(&format!("/api/v1/identity-types/{}", id(&student)), &other)
        .await;
    assert_eq!(s, 404);
}

async fn cards_are_claimable_only_once_the_operator_approves_them(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (tenant, admin) = app.tenant("university", "standard").await;
    let student = identity_type(&app, &admin, "student", "name_id").await;
    let (s, card) = app
        .post(
            "/api/v1/cards",
            &admin,
            json!({"title": "Campus card", "subtitle": "campus_card",
                   "identity_type_ids": [id(&student)], "claim_mode": "open_link"}),
        )
        .await;
    assert_eq!(s, 201, "{card}");
    assert_eq!(card["status"], "pending_review");
    assert_eq!(card["targeting"], "one_identity");
    let (s, bad) = app
        .post(
            "/api/v1/cards",
            &admin,
            json!({"title": "X", "subtitle": "wizard_card",
                   "identity_type_ids": [id(&student)], "claim_mode": "open_link"}),
        )
        .await;
    assert_eq!(s, 422, "{bad}");
    let (s, bad) = app
        .post(
            "/api/v1/cards",
            &admin,
            json!({"title": "X", "subtitle": "campus_card",
                   "identity_type_ids": [uuid::Uuid::new_v4()], "claim_mode": "open_link"}),
        )
        .await;
    assert_eq!(s, 422, "{bad}");

    // The cover is judged by its bytes.
    let (s, bad) = put_cover(&app, &admin, &card, png(999, 600)).await;
    assert_problem(s, &bad, 422, "cover_invalid");
    assert_eq!(bad["errors"][0]["rule"], "dimensions", "{bad}");
    assert!(bad["detail"].as_str().unwrap().contains("999×600"), "{bad}");
    let (s, bad) = put_cover(&app, &admin, &card, b"GIF89a not a png at all".to_vec()).await;
    assert_problem(s, &bad, 422, "cover_invalid");
    assert_eq!(bad["errors"][0]["rule"], "format", "{bad}");
    let (s, bad) = put_cover(&app, &admin, &card, jpeg(600, 1000)).await;
    assert_problem(s, &bad, 422, "cover_invalid");
    let mut huge = png(1000, 600);
    huge.resize(1024 * 1024, 0);
    let (s, bad) = put_cover(&app, &admin, &card, huge).await;
    assert_problem(s, &bad, 413, "too_large");
    let (s, with_jpeg) = put_cover(&app, &admin, &card, jpeg(1000, 600)).await;
    assert_eq!(s, 200, "{with_jpeg}");
    let cover = png(1000, 600);
    let (s, card) = put_cover(&app, &admin, &card, cover.clone()).await;
    assert_eq!(s, 200, "{card}");
    let sha = card["cover_sha256"].as_str().unwrap();
    let res = app
        .client
        .get(app.url(&format!("/api/v1/covers/{sha}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.bytes().await.unwrap().to_vec(), cover);

    // Not claimable while it waits.
    let link = format!("/api/v1/cards/{}/claim-link", id(&card));
    let (s, refused) = app.get(&link, &admin).await;
    assert_problem(s, &refused, 409, "card_not_approved");
    let (s, refused) = claim(
        &app,
        &tenant,
        &card,
        json!({"identity_type_id": id(&student)}),
    )
    .await;
    assert_problem(s, &refused, 409, "card_not_approved");

    // Only the operator reviews, and approves what they saw.
    let approve = format!("/api/v1/card-reviews/{}/approve", id(&card));
    let (s, _) = app
        .post(&approve, &admin, json!({"revision": card["revision"]}))
        .await;
    assert_eq!(s, 403);
    let (s, pending) = app.get("/api/v1/card-reviews", ROOT_TOKEN).await;
    assert_eq!(s, 200);
    assert!(pending["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == card["id"]));
    let (s, refused) = app
        .post(
            &approve,
            ROOT_TOKEN,
            json!({"revision": with_jpeg["revision"]}),
        )
        .await;
    assert_problem(s, &refused, 409, "card_changed");
    let (s, approved) = app
        .post(&approve, ROOT_TOKEN, json!({"revision": card["revision"]}))
        .await;
    assert_eq!(
        (s, &approved["status"]),
        (200, &json!("approved")),
        "{approved}"
    );
    let (s, again) = app
        .post(
            &approve,
            ROOT_TOKEN,
            json!({"revision": approved["revision"]}),
        )
        .await;
    assert_problem(s, &again, 409, "not_pending_review");
    let (s, link) = app.get(&link, &admin).await;
    assert_eq!(s, 200, "{link}");
    assert!(link["url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/claim?tenant={tenant}&card={}", id(&card))));
    let (s, offer) = app
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/claim/{tenant}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 200, "{offer}");
    assert_eq!(offer["cards"][0]["id"], card["id"]);
    assert_eq!(
        offer["cards"][0]["identity_types"][0]["fields"],
        json!(["name", "id_number"])
    );

    // A change sends it back to review; a rejection says why.
    let (s, changed) = app
        .patch(
            &format!("/api/v1/cards/{}", id(&card)),
            &admin,
            json!({"title": "New card"}),
        )
        .await;
    assert_eq!(
        (s, &changed["status"]),
        (200, &json!("pending_review")),
        "{changed}"
    );
    let (s, refused) = claim(
        &app,
        &tenant,
        &card,
        json!({"identity_type_id": id(&student)}),
    )
    .await;
    assert_problem(s, &refused, 409, "card_not_approved");
    let (s, offer) = app
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/claim/{tenant}"),
            None,
            None,
        )
        .await;
    assert_eq!((s, offer["cards"].as_array().unwrap().len()), (200, 0));
    let (s, rejected) = app
        .post(
            &format!("/api/v1/card-reviews/{}/reject", id(&card)),
            ROOT_TOKEN,
            json!({"reason": "the title must name the school"}),
        )
        .await;
    assert_eq!(
        (s, &rejected["status"]),
        (200, &json!("rejected")),
        "{rejected}"
    );
    let (s, seen) = app
        .get(&format!("/api/v1/cards/{}", id(&card)), &admin)
        .await;
    assert_eq!(s, 200);
    assert_eq!(seen["review_reason"], "the title must name the school");
    // Without a cover a card cannot be approved.
    let (s, bare) = app
        .post(
            "/api/v1/cards",
            &admin,
            json!({"title": "Bare", "subtitle": "staff_card",
                   "identity_type_ids": [id(&student)], "claim_mode": "open_link"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, refused) = app
        .post(
            &format!("/api/v1/card-reviews/{}/approve", id(&bare)),
            ROOT_TOKEN,
            json!({"revision": bare["revision"]}),
        )
        .await;
    assert_problem(s, &refused, 409, "cover_missing");
}

async fn a_claim_by_name_and_id_activates_the_card_on_one_phone(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (tenant, admin) = app.tenant("university", "standard").await;
    let student = identity_type(&app, &admin, "student", "name_id").await;
    let teacher = identity_type(&app, &admin, "teacher", "phone").await;
    let card = approved_card(&app, &admin, &[&student], "open_link").await;
    let (s, user) = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"name": "Li Lei", "number": "S100", "identity": "student",
                   "id_number": "11010519491231002X"}),
        )
        .await;
    assert_eq!(s, 201, "{user}");
    let ok = json!({"identity_type_id": id(&student), "name": "Li Lei",
                    "id_number": "11010519491231002X"});

    let (s, refused) = claim(
        &app,
        &tenant,
        &card,
        json!({"identity_type_id": id(&teacher),
        "phone": "13800000000", "phone_code": "000000"}),
    )
    .await;
    assert_problem(s, &refused, 422, "identity_not_eligible");
    let (s, refused) = claim(
        &app,
        &tenant,
        &card,
        json!({"identity_type_id": id(&student),
        "name": "Han Meimei", "id_number": "11010519491231002X"}),
    )
    .await;
    assert_problem(s, &refused, 422, "verification_failed");
    let (s, refused) = claim(
        &app,
        &tenant,
        &card,
        json!({"identity_type_id": id(&student),
        "name": "Li Lei", "id_number": "110105199003071239"}),
    )
    .await;
    assert_problem(s, &refused, 422, "verification_failed");
    let (s, refused) = claim(
        &app,
        &tenant,
        &card,
        json!({"identity_type_id": id(&student)}),
    )
    .await;
    assert_problem(s, &refused, 422, "invalid");

    let mut dashboard = Ws::connect(&app.base, &admin).await;
    dashboard.subscribe("tenant", None).await;
    let (s, first) = claim(&app, &tenant, &card, ok.clone()).await;
    assert_eq!(s, 201, "{first}");
    // The tenant's dashboard hears it, without the person's name.
    let e = dashboard.next_event().await;
    assert_eq!(
        (&e["type"], &e["data"]["card_id"], &e["data"]["user_id"]),
        (&json!("card.activated"), &card["id"], &user["id"]),
        "{e}"
    );
    assert!(!e.to_string().contains("Li Lei"), "{e}");
    assert_eq!(first["user"]["id"], user["id"]);
    assert_eq!(first["claim"]["method"], "name_id");
    let token = first["token"].as_str().unwrap().to_string();
    let (s, mine) = app.get("/api/v1/me/cards", &token).await;
    assert_eq!(s, 200, "{mine}");
    assert_eq!(mine["items"][0]["card"]["id"], card["id"]);
    let (s, _) = app.get("/api/v1/me/wallet", &token).await;
    assert_eq!(s, 200);

    // The card office sees who holds the card, and how they proved it.
    let (s, holders) = app
        .get(&format!("/api/v1/cards/{}/holders", id(&card)), &admin)
        .await;
    assert_eq!(s, 200, "{holders}");
    assert_eq!(holders["items"].as_array().unwrap().len(), 1, "{holders}");
    assert_eq!(holders["items"][0]["number"], "S100");
    assert_eq!(holders["items"][0]["method"], "name_id");
    // Claimed again on a new phone: the same claim, and the old phone is out.
    let (s, again) = claim(&app, &tenant, &card, ok.clone()).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["claim"]["id"], first["claim"]["id"]);
    let (s, _) = app.get("/api/v1/me/cards", &token).await;
    assert_eq!(s, 401, "the first phone's token ended");
    let (s, _) = app
        .get("/api/v1/me/cards", again["token"].as_str().unwrap())
        .await;
    assert_eq!(s, 200);

    // Only active people claim: a departed student cannot.
    let (s, _) = app
        .patch(
            &format!("/api/v1/users/{}", id(&user)),
            &admin,
            json!({"status": "left"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, refused) = claim(&app, &tenant, &card, ok.clone()).await;
    assert_problem(s, &refused, 422, "verification_failed");
    // Another tenant's card is not found through this tenant.
    let (other, _) = app.tenant("university", "standard").await;
    let (s, _) = claim(&app, &other, &card, ok).await;
    assert_eq!(s, 404);
}

async fn a_claim_by_phone_needs_the_code_texted_to_the_imported_phone(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (tenant, admin) = app.tenant("university", "standard").await;
    let teacher = identity_type(&app, &admin, "teacher", "phone").await;
    let card = approved_card(&app, &admin, &[&teacher], "open_link").await;
    let (s, user) = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"name": "Wang", "number": "T1", "identity": "teacher", "phone": "13800138000"}),
        )
        .await;
    assert_eq!(s, 201, "{user}");

    // A phone nobody imported gets the same answer, and no text.
    let (s, sent) = send_code(&app, &tenant, &teacher, "13900000000").await;
    assert_eq!(s, 202, "{sent}");
    assert!(texted(&app, &admin, "13900000000").await.is_empty());
    let (s, sent) = send_code(&app, &tenant, &teacher, "138-0013-8000").await;
    assert_eq!(s, 202, "{sent}");
    let codes = texted(&app, &admin, "13800138000").await;
    assert_eq!(codes.len(), 1);
    let (s, refused) = send_code(&app, &tenant, &teacher, "13800138000").await;
    assert_problem(s, &refused, 409, "phone_code_too_soon");

    let wrong = if codes[0] == "000000" {
        "111111"
    } else {
        "000000"
    };
    let (s, refused) = claim(
        &app,
        &tenant,
        &card,
        json!({"identity_type_id": id(&teacher),
        "phone": "13800138000", "phone_code": wrong}),
    )
    .await;
    assert_problem(s, &refused, 422, "phone_code_wrong");
    let right = json!({"identity_type_id": id(&teacher), "phone": "13800138000",
                       "phone_code": codes[0]});
    let (s, claimed) = claim(&app, &tenant, &card, right.clone()).await;
    assert_eq!(s, 201, "{claimed}");
    assert_eq!(claimed["user"]["id"], user["id"]);
    // A code works once.
    let (s, refused) = claim(&app, &tenant, &card, right).await;
    assert_problem(s, &refused, 422, "phone_code_expired");

    // Five wrong tries use a code up; ten minutes end it.
    app.clock.advance(SignedDuration::from_secs(61));
    let (s, _) = send_code(&app, &tenant, &teacher, "13800138000").await;
    assert_eq!(s, 202);
    let code = texted(&app, &admin, "13800138000").await[0].clone();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let (s, refused) = claim(
            &app,
            &tenant,
            &card,
            json!({"identity_type_id": id(&teacher),
            "phone": "13800138000", "phone_code": wrong}),
        )
        .await;
        assert_problem(s, &refused, 422, "phone_code_wrong");
    }
    let (s, refused) = claim(
        &app,
        &tenant,
        &card,
        json!({"identity_type_id": id(&teacher),
        "phone": "13800138000", "phone_code": code}),
    )
    .await;
    assert_problem(s, &refused, 422, "phone_code_expired");
}

async fn open_registration_proves_a_phone_and_finds_the_same_person_again(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (tenant, admin) = app.tenant("university", "standard").await;
    let alumni = identity_type(&app, &admin, "alumni", "registration").await;
    let card = approved_card(&app, &admin, &[&alumni], "open_link").await;
    let (s, _) = send_code(&app, &tenant, &alumni, "13700000001").await;
    assert_eq!(s, 202);
    let code = texted(&app, &admin, "13700000001").await[0].clone();
    let (s, refused) = claim(
        &app,
        &tenant,
        &card,
        json!({"identity_type_id": id(&alumni),
        "phone": "13700000001", "phone_code": code}),
    )
    .await;
    assert_problem(s, &refused, 422, "invalid");
    assert_eq!(refused["errors"][0]["field"], "name", "{refused}");
    let (s, first) = claim(
        &app,
        &tenant,
        &card,
        json!({"identity_type_id": id(&alumni),
        "name": "Zhao", "phone": "13700000001", "phone_code": code}),
    )
    .await;
    assert_eq!(s, 201, "{first}");
    assert!(
        first["user"]["number"].as_str().unwrap().starts_with('R'),
        "{first}"
    );
    let (s, person) = app
        .get(
            &format!("/api/v1/users/{}", first["user"]["id"].as_str().unwrap()),
            &admin,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        (person["identity"].as_str(), person["status"].as_str()),
        (Some("alumni"), Some("active"))
    );

    // The same phone registers the same person again, on a new phone.
    app.clock.advance(SignedDuration::from_secs(61));
    let (s, _) = send_code(&app, &tenant, &alumni, "13700000001").await;
    assert_eq!(s, 202);
    let code = texted(&app, &admin, "13700000001").await[0].clone();
    let (s, again) = claim(
        &app,
        &tenant,
        &card,
        json!({"identity_type_id": id(&alumni),
        "name": "Zhao", "phone": "13700000001", "phone_code": code}),
    )
    .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["user"]["id"], first["user"]["id"]);
    let (s, users) = app.get("/api/v1/users?q=Zhao", &admin).await;
    assert_eq!((s, users["items"].as_array().unwrap().len()), (200, 1));
    // Holders page in the order they first claimed.
    for phone in ["13700000002", "13700000003"] {
        let (s, _) = send_code(&app, &tenant, &alumni, phone).await;
        assert_eq!(s, 202);
        let code = texted(&app, &admin, phone).await[0].clone();
        let (s, made) = claim(
            &app,
            &tenant,
            &card,
            json!({"identity_type_id": id(&alumni), "name": phone, "phone": phone,
                   "phone_code": code}),
        )
        .await;
        assert_eq!(s, 201, "{made}");
    }
    let path = format!("/api/v1/cards/{}/holders?limit=2", id(&card));
    let (s, first_page) = app.get(&path, &admin).await;
    assert_eq!(s, 200, "{first_page}");
    let names: Vec<&str> = first_page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Zhao", "13700000002"]);
    let cursor = first_page["next_cursor"].as_str().expect("a second page");
    let (s, second) = app.get(&format!("{path}&cursor={cursor}"), &admin).await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["items"][0]["name"], "13700000003");
    assert!(second["next_cursor"].is_null());
}

async fn claim_modes_need_the_official_accounts_ticket(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    // An edition with the open platform: the official account's backend is an app.
    let (tenant, admin) = app.tenant("university", "advanced").await;
    let student = identity_type(&app, &admin, "student", "name_id").await;
    let (s, _) = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"name": "Li Lei", "number": "S100", "identity": "student",
                   "id_number": "11010519491231002X"}),
        )
        .await;
    assert_eq!(s, 201);
    let details = |ticket: Option<&str>| {
        json!({"identity_type_id": id(&student), "name": "Li Lei",
               "id_number": "11010519491231002X", "ticket": ticket})
    };
    // The official account's backend: it vouches with `claim_tickets`, and hears each
    // activation by webhook.
    let mut hooks = Receiver::start().await;
    let backend = hooked_app(
        &app,
        &admin,
        json!({"name": "Official account", "kind": "headless", "scopes": ["claim_tickets"],
               "webhook_url": hooks.url("/hook"), "webhook_events": ["card.activated"]}),
    )
    .await;
    let no_follow = approved_card(&app, &admin, &[&student], "no_follow").await;
    let (s, refused) = claim(&app, &tenant, &no_follow, details(None)).await;
    assert_problem(s, &refused, 403, "claim_ticket_required");
    let (s, ticket) = app
        .post(
            "/api/v1/claim-tickets",
            &admin,
            json!({"account": "wx-openid-1", "followed": false}),
        )
        .await;
    assert_eq!(s, 201, "{ticket}");
    assert!(ticket["url"].as_str().unwrap().contains("#ticket="));
    let t = ticket["ticket"].as_str().unwrap();
    let (s, claimed) = claim(&app, &tenant, &no_follow, details(Some(t))).await;
    assert_eq!(s, 201, "{claimed}");
    assert_eq!(claimed["claim"]["account"], "wx-openid-1");
    let (s, refused) = claim(&app, &tenant, &no_follow, details(Some(t))).await;
    assert_problem(s, &refused, 410, "claim_ticket_used_or_expired");

    let follow = approved_card(&app, &admin, &[&student], "follow_required").await;
    let (s, ticket) = app
        .post(
            "/api/v1/claim-tickets",
            &admin,
            json!({"account": "wx-openid-1", "followed": false}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, refused) = claim(&app, &tenant, &follow, details(ticket["ticket"].as_str())).await;
    assert_problem(s, &refused, 403, "follow_required");
    let (s, ticket) = app
        .post(
            "/api/v1/claim-tickets",
            &admin,
            json!({"account": "wx-openid-1", "followed": true}),
        )
        .await;
    assert_eq!(s, 201);
    // Half an hour ends a ticket.
    app.clock.advance(SignedDuration::from_mins(31));
    let (s, refused) = claim(&app, &tenant, &follow, details(ticket["ticket"].as_str())).await;
    assert_problem(s, &refused, 410, "claim_ticket_used_or_expired");
    // Other scopes may not vouch.
    let reader = hooked_app(
        &app,
        &admin,
        json!({"name": "Reader", "kind": "headless", "scopes": ["visitors_read"]}),
    )
    .await;
    let asked = json!({"account": "wx-openid-1", "followed": true});
    let path = "/api/v1/claim-tickets";
    let (s, refused) = signed(&app, (&reader.0, &reader.1), "POST", path, Some(&asked)).await;
    assert_eq!(s, 403, "{refused}");
    let (s, ticket) = signed(&app, (&backend.0, &backend.1), "POST", path, Some(&asked)).await;
    assert_eq!(s, 201, "{ticket}");
    let (s, claimed) = claim(&app, &tenant, &follow, details(ticket["ticket"].as_str())).await;
    assert_eq!(s, 201, "{claimed}");
    let mut heard = Vec::new();
    for _ in 0..2 {
        let got = hooks.next().await.json();
        assert_eq!(got["type"], "card.activated", "{got}");
        assert_eq!(got["data"]["account"], "wx-openid-1", "{got}");
        heard.push(got["data"]["card_id"].as_str().unwrap().to_string());
    }
    heard.sort();
    let mut made = vec![id(&no_follow), id(&follow)];
    made.sort();
    assert_eq!(heard, made, "one activation each");
    hooks.nothing_more().await;
    hooks.handle.stop(true).await;
    // Another tenant's ticket is no ticket here.
    let (_, other) = app.tenant("university", "standard").await;
    let (s, foreign) = app
        .post(
            "/api/v1/claim-tickets",
            &other,
            json!({"account": "x", "followed": true}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, refused) = claim(&app, &tenant, &follow, details(foreign["ticket"].as_str())).await;
    assert_problem(s, &refused, 410, "claim_ticket_used_or_expired");
}

/// The tenant's identity endpoint: checks OneCard's signature with the secret it was
/// given, and knows one person, by number `T100`.
struct Endpoint {
    base: String,
    secret: Arc<Mutex<String>>,
    status: Arc<Mutex<u16>>,
    handle: actix_web::dev::ServerHandle,
}

#[derive(Clone)]
struct EndpointState {
    secret: Arc<Mutex<String>>,
    status: Arc<Mutex<u16>>,
}

async fn endpoint(
    state: web::Data<EndpointState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let secret = state.secret.lock().unwrap().clone();
    if !signed_with(&secret, &req, &body) {
        return HttpResponse::Unauthorized().finish();
    }
    let status = *state.status.lock().unwrap();
    if status != 200 {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .finish();
    }
    let asked: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if asked["number"] == "T100" && asked["identity_type"] == "partner" {
        HttpResponse::Ok().json(json!({"matched": true, "name": "Teacher Wang", "number": "T100"}))
    } else {
        HttpResponse::Ok().json(json!({"matched": false}))
    }
}

impl Endpoint {
    async fn start() -> Self {
        let shared = EndpointState {
            secret: Arc::new(Mutex::new(String::new())),
            status: Arc::new(Mutex::new(200)),
        };
        let (secret, status) = (shared.secret.clone(), shared.status.clone());
        let (base, handle) = serve_local(web::Data::new(shared), endpoint);
        Endpoint {
            base,
            secret,
            status,
            handle,
        }
    }
}

async fn an_external_identity_endpoint_is_asked_signed(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let server = Endpoint::start().await;
    let (tenant, admin) = app.tenant("university", "standard").await;
    let (s, partner) = try_identity_type(
        &app,
        &admin,
        json!({"name": "partner", "category": "staff", "verification": "external",
                   "external_url": format!("{}/who", server.base)}),
    )
    .await;
    assert_eq!(s, 201, "{partner}");
    *server.secret.lock().unwrap() = partner["external_secret"].as_str().unwrap().to_string();
    let card = approved_card(&app, &admin, &[&partner], "open_link").await;
    let ask = |number: &str| json!({"identity_type_id": id(&partner), "number": number});

    let (s, refused) = claim(&app, &tenant, &card, ask("X999")).await;
    assert_problem(s, &refused, 422, "verification_failed");
    // Vouched for but unknown here: the person is created as the endpoint names them.
    let (s, first) = claim(&app, &tenant, &card, ask("T100")).await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(
        (
            first["user"]["name"].as_str(),
            first["user"]["number"].as_str()
        ),
        (Some("Teacher Wang"), Some("T100"))
    );
    let (s, again) = claim(&app, &tenant, &card, ask("T100")).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["user"]["id"], first["user"]["id"]);

    // An endpoint that fails is "try again later", never a yes.
    *server.status.lock().unwrap() = 500;
    let (s, refused) = claim(&app, &tenant, &card, ask("T100")).await;
    assert_problem(s, &refused, 503, "unavailable");
    *server.status.lock().unwrap() = 200;
    // A new secret: the endpoint, still holding the old one, refuses OneCard's calls.
    let (s, rotated) = app
        .post(
            &format!("/api/v1/identity-types/{}/secret", id(&partner)),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{rotated}");
    let (s, refused) = claim(&app, &tenant, &card, ask("T100")).await;
    assert_problem(s, &refused, 503, "unavailable");
    *server.secret.lock().unwrap() = rotated["external_secret"].as_str().unwrap().to_string();
    let (s, _) = claim(&app, &tenant, &card, ask("T100")).await;
    assert_eq!(s, 200);
    drop(server.handle.stop(false));
}

async fn a_managing_identity_administers_its_departments_with_the_cards_token(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("enterprise", "standard").await;
    let finance = department(&app, &admin, "Finance", None).await;
    let payroll = department(&app, &admin, "Payroll", Some(id(&finance).as_str())).await;
    let sales = department(&app, &admin, "Sales", None).await;
    let (s, manager_type) = try_identity_type(
        &app,
        &admin,
        json!({"name": "finance_manager", "category": "staff", "verification": "name_id",
                   "manages": [{"id": id(&finance), "access": "manage"}]}),
    )
    .await;
    assert_eq!(s, 201, "{manager_type}");
    identity_type(&app, &admin, "staff", "name_id").await;
    let (s, refused) = try_identity_type(
        &app,
        &admin,
        json!({"name": "ghost", "category": "staff", "verification": "name_id",
                   "manages": [{"id": uuid::Uuid::now_v7(), "access": "view"}]}),
    )
    .await;
    assert_eq!(s, 422, "{refused}");
    let person = |name: &str, number: &str, identity: &str, dept: &Value| {
        json!({"name": name, "number": number, "identity": identity,
               "department_ids": [id(dept)]})
    };
    let (s, boss) = app
        .post(
            "/api/v1/users",
            &admin,
            person("Qian", "F1", "finance_manager", &finance),
        )
        .await;
    assert_eq!(s, 201, "{boss}");
    let (s, clerk) = app
        .post(
            "/api/v1/users",
            &admin,
            person("Sun", "F2", "staff", &payroll),
        )
        .await;
    assert_eq!(s, 201, "{clerk}");
    let (s, seller) = app
        .post(
            "/api/v1/users",
            &admin,
            person("Zhou", "S1", "staff", &sales),
        )
        .await;
    assert_eq!(s, 201, "{seller}");
    let token_of = |user: &Value| format!("/api/v1/users/{}/tokens", id(user));
    let (_, t) = app.post(&token_of(&boss), &admin, json!({})).await;
    let boss_token = t["token"].as_str().unwrap().to_string();
    let (_, t) = app.post(&token_of(&clerk), &admin, json!({})).await;
    let clerk_token = t["token"].as_str().unwrap().to_string();

    // With their own card's token, the manager sees and changes Finance and what is under
    // it, and nothing else.
    let (s, list) = app.get("/api/v1/users", &boss_token).await;
    assert_eq!(s, 200, "{list}");
    let mut numbers: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["number"].as_str().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(numbers, ["F1", "F2"]);
    let (s, _) = app
        .get(&format!("/api/v1/users/{}", id(&seller)), &boss_token)
        .await;
    assert_eq!(s, 404, "outside the scope");
    let (s, renamed) = app
        .patch(
            &format!("/api/v1/users/{}", id(&clerk)),
            &boss_token,
            json!({"name": "Sun Li"}),
        )
        .await;
    assert_eq!((s, &renamed["name"]), (200, &json!("Sun Li")), "{renamed}");
    let (s, refused) = app
        .patch(
            &format!("/api/v1/users/{}", id(&seller)),
            &boss_token,
            json!({"name": "X"}),
        )
        .await;
    assert_eq!(s, 404, "{refused}");
    // Identities, and the rights they carry, are given by admins only.
    let (s, refused) = app
        .patch(
            &format!("/api/v1/users/{}", id(&clerk)),
            &boss_token,
            json!({"identity": "finance_manager"}),
        )
        .await;
    assert_problem(s, &refused, 403, "forbidden");
    let (s, _) = app
        .post(
            "/api/v1/departments",
            &boss_token,
            json!({"name": "Audit", "parent_id": id(&finance)}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, refused) = app
        .post("/api/v1/departments", &boss_token, json!({"name": "Top"}))
        .await;
    assert_problem(s, &refused, 403, "out_of_scope");
    // Nothing beyond the directory: no money, no identity types, no cards.
    for path in [
        "/api/v1/merchants",
        "/api/v1/identity-types",
        "/api/v1/cards",
        "/api/v1/audit",
    ] {
        let (s, _) = app.get(path, &boss_token).await;
        assert_eq!(s, 403, "{path}");
    }
    // Audit names the member who acted.
    let (_, audit) = app.get("/api/v1/audit?action=user.update", &admin).await;
    let actor = format!("user:{}", id(&boss));
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == actor.as_str()),
        "{audit}"
    );
    // A member without a managing identity is no admin.
    let (s, _) = app.get("/api/v1/users", &clerk_token).await;
    assert_eq!(s, 403);

    // Narrowed to view: reading still works, changing does not.
    let (s, _) = app
        .patch(
            &format!("/api/v1/identity-types/{}", id(&manager_type)),
            &admin,
            json!({"manages": [{"id": id(&finance), "access": "view"}]}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = app.get("/api/v1/users", &boss_token).await;
    assert_eq!(s, 200);
    let (s, refused) = app
        .patch(
            &format!("/api/v1/users/{}", id(&clerk)),
            &boss_token,
            json!({"name": "Sun"}),
        )
        .await;
    assert_eq!(s, 403, "{refused}");
    // A manager who left manages nothing.
    let (s, _) = app
        .patch(
            &format!("/api/v1/users/{}", id(&boss)),
            &admin,
            json!({"status": "left"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = app.get("/api/v1/users", &boss_token).await;
    assert_eq!(s, 403);
}

/// The operator's SMS gateway adapter: takes texts signed with `GATEWAY_SECRET` and keeps
/// them, or answers `status`.
#[derive(Clone, Default)]
struct Gateway {
    texts: Arc<Mutex<Vec<Value>>>,
    status: Arc<Mutex<u16>>,
}

const GATEWAY_SECRET: &str = "gateway-secret-0123456789abcdefghijklmnop";

async fn gateway(state: web::Data<Gateway>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if !signed_with(GATEWAY_SECRET, &req, &body) {
        return HttpResponse::Unauthorized().finish();
    }
    let status = *state.status.lock().unwrap();
    if status != 200 {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .finish();
    }
    state
        .texts
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    HttpResponse::Ok().finish()
}

async fn codes_go_signed_to_the_operators_text_gateway(engine: Engine) {
    let shared = Gateway::default();
    *shared.status.lock().unwrap() = 200;
    let (base, handle) = serve_local(web::Data::new(shared.clone()), gateway);
    let Some(app) = spawn_with(engine, |c| {
        c.text_gateway = onecard::config::TextGateway::Http {
            url: format!("{base}/sms"),
            secret: GATEWAY_SECRET.to_string().into(),
        }
    })
    .await
    else {
        return;
    };
    let (tenant, admin) = app.tenant("university", "standard").await;
    let teacher = identity_type(&app, &admin, "teacher", "phone").await;
    let card = approved_card(&app, &admin, &[&teacher], "open_link").await;
    let (s, _) = app
        .post(
            "/api/v1/users",
            &admin,
            json!({"name": "Wang", "number": "T1", "identity": "teacher", "phone": "13800138000"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, sent) = send_code(&app, &tenant, &teacher, "13800138000").await;
    assert_eq!(s, 202, "{sent}");
    let text = shared
        .texts
        .lock()
        .unwrap()
        .pop()
        .expect("the gateway took a text");
    assert_eq!(
        (text["phone"].as_str(), text["tenant_id"].as_str()),
        (Some("13800138000"), Some(tenant.as_str()))
    );
    let code = text["text"].as_str().unwrap()[..6].to_string();
    let (s, claimed) = claim(
        &app,
        &tenant,
        &card,
        json!({"identity_type_id": id(&teacher), "phone": "13800138000", "phone_code": code}),
    )
    .await;
    assert_eq!(s, 201, "{claimed}");
    // No sandbox to read texts from.
    let (s, _) = app.get("/api/v1/sandbox/texts", &admin).await;
    assert_eq!(s, 404);
    // A gateway that fails is "try again", never a silent success.
    *shared.status.lock().unwrap() = 500;
    app.clock.advance(SignedDuration::from_secs(61));
    let (s, refused) = send_code(&app, &tenant, &teacher, "13800138000").await;
    assert_problem(s, &refused, 503, "unavailable");
    assert!(shared.texts.lock().unwrap().is_empty());
    drop(handle.stop(false));
}
