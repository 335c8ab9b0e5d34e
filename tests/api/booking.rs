//! Room booking (SPEC §13): rooms with opening hours and slots in the tenant's time zone;
//! bookings on those slots that never overlap, however they race; free slots; booking
//! pages for members only; cancellation; who may do what.

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use onecard_actors::clock::Clock;
use serde_json::{json, Value};

use crate::checkin::member;
use crate::groups::{group, sub_admin};
use crate::helpers::{assert_problem, spawn_app, Engine, TestApp};
use crate::on_both_engines;

on_both_engines!(
    rooms_are_booked_on_their_slots_shared_with_members_and_cancelled,
    concurrent_bookings_of_one_time_make_one,
    the_booking_app_grant_decides_who_keeps_rooms,
);

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

/// The first Monday at least two days after the test clock's today, in Shanghai (the
/// tenant's default time zone).
fn monday(app: &TestApp) -> Date {
    let tz = TimeZone::get("Asia/Shanghai").unwrap();
    let mut d = app.clock.now().to_zoned(tz).date() + SignedDuration::from_hours(48);
    while d.weekday() != Weekday::Monday {
        d = d.tomorrow().unwrap();
    }
    d
}

fn at(date: Date, hh: i8, mm: i8) -> Timestamp {
    date.at(hh, mm, 0, 0)
        .to_zoned(TimeZone::get("Asia/Shanghai").unwrap())
        .unwrap()
        .timestamp()
}

async fn room(app: &TestApp, admin: &str, name: &str) -> Value {
    let (s, room) = app
        .post(
            "/api/v1/rooms",
            admin,
            json!({"name": name, "capacity": 10, "opens": "08:00", "closes": "22:00",
                   "slot_minutes": 30, "max_slots": 4}),
        )
        .await;
    assert_eq!(s, 201, "{room}");
    room
}

async fn book(
    app: &TestApp,
    token: &str,
    room: &Value,
    from: Timestamp,
    to: Timestamp,
) -> (u16, Value) {
    app.post(
        "/api/v1/bookings",
        token,
        json!({"room_id": room["id"], "starts_at": from.to_string(), "ends_at": to.to_string(),
               "title": "Thesis committee"}),
    )
    .await
}

async fn free_slots(app: &TestApp, token: &str, room: &Value, date: Date) -> Vec<String> {
    let (s, day) = app
        .get(
            &format!("/api/v1/rooms/{}/availability?date={date}", id(room)),
            token,
        )
        .await;
    assert_eq!(s, 200, "{day}");
    let tz = TimeZone::get("Asia/Shanghai").unwrap();
    day["slots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["free"] == false)
        .map(|s| {
            let t: Timestamp = s["starts_at"].as_str().unwrap().parse().unwrap();
            t.to_zoned(tz.clone()).strftime("%H:%M").to_string()
        })
        .collect()
}

async fn rooms_are_booked_on_their_slots_shared_with_members_and_cancelled(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "advanced").await;

    // What a room must be.
    for (body, field) in [
        (
            json!({"name": "R", "capacity": 10, "opens": "10:00", "closes": "09:00"}),
            "closes",
        ),
        (
            json!({"name": "R", "capacity": 10, "slot_minutes": 7}),
            "slot_minutes",
        ),
        (
            json!({"name": "R", "capacity": 10, "opens": "8am"}),
            "opens",
        ),
        (json!({"name": "R", "capacity": 0}), "capacity"),
        (json!({"name": "R", "capacity": 10, "days": [0]}), "days"),
    ] {
        let (s, p) = app.post("/api/v1/rooms", &admin, body).await;
        assert_problem(s, &p, 422, "invalid");
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    let seminar = room(&app, &admin, "Seminar 3").await;
    // A change keeps what it does not name; a bad one changes nothing.
    let path = format!("/api/v1/rooms/{}", id(&seminar));
    let (s, same) = app.patch(&path, &admin, json!({})).await;
    assert_eq!((s, same["capacity"].clone()), (200, json!(10)), "{same}");
    let (s, p) = app.patch(&path, &admin, json!({"max_per_person": 0})).await;
    assert_problem(s, &p, 422, "invalid");
    let (s, changed) = app
        .patch(
            &path,
            &admin,
            json!({"location": "Library", "max_per_person": 5}),
        )
        .await;
    assert_eq!(s, 200, "{changed}");
    let (_, stored) = app.get(&path, &admin).await;
    assert_eq!(
        (stored["location"].clone(), stored["max_per_person"].clone()),
        (json!("Library"), json!(5)),
        "the change is stored: {stored}"
    );
    let (s, _) = app.patch(&path, &admin, json!({"max_per_person": 3})).await;
    assert_eq!(s, 200);
    assert_eq!(seminar["days"], json!([1, 2, 3, 4, 5]));
    let (s, p) = app
        .post(
            "/api/v1/rooms",
            &admin,
            json!({"name": "Seminar 3", "capacity": 4}),
        )
        .await;
    assert_problem(s, &p, 409, "room_name_taken");

    let (alice, alice_t) = member(&app, &admin, "B-1", json!({})).await;
    let (_, bob_t) = member(&app, &admin, "B-2", json!({})).await;
    let mon = monday(&app);

    let (s, first) = book(&app, &alice_t, &seminar, at(mon, 9, 0), at(mon, 10, 0)).await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(
        (first["room_name"].clone(), first["user_id"].clone()),
        (json!("Seminar 3"), alice["id"].clone())
    );
    assert_eq!(
        (first["status"].clone(), first["attendees"].clone()),
        (json!("confirmed"), json!(1))
    );
    // Overlapping: refused, and nothing of it is kept.
    let (s, p) = book(&app, &bob_t, &seminar, at(mon, 9, 30), at(mon, 10, 30)).await;
    assert_problem(s, &p, 409, "slot_taken");
    // Touching: fine.
    let (s, second) = book(&app, &bob_t, &seminar, at(mon, 10, 0), at(mon, 11, 0)).await;
    assert_eq!(s, 201, "{second}");
    assert_eq!(
        free_slots(&app, &bob_t, &seminar, mon).await,
        ["09:00", "09:30", "10:00", "10:30"]
    );

    // Bookings that do not fit the room.
    let sat = mon - SignedDuration::from_hours(48);
    for (from, to, rule) in [
        (at(mon, 9, 15), at(mon, 9, 45), "slots"),
        (at(mon, 7, 30), at(mon, 8, 30), "opening_hours"),
        (at(mon, 12, 0), at(mon, 14, 30), "max_slots"),
        (at(sat, 9, 0), at(sat, 9, 30), "closed"),
        (at(mon, 12, 0), at(mon, 12, 0), "after"),
        (
            at(mon, 12, 0) + SignedDuration::from_hours(24 * 42),
            at(mon, 12, 30) + SignedDuration::from_hours(24 * 42),
            "too_far_ahead",
        ),
    ] {
        let (s, p) = book(&app, &alice_t, &seminar, from, to).await;
        assert_problem(s, &p, 422, "invalid");
        assert_eq!(p["errors"][0]["rule"], rule, "{p}");
    }
    let (s, p) = app
        .post(
            "/api/v1/bookings",
            &alice_t,
            json!({"room_id": seminar["id"], "starts_at": at(mon, 12, 0).to_string(),
               "ends_at": at(mon, 12, 30).to_string(), "title": "Big", "attendees": 11}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    assert_eq!(p["errors"][0]["field"], "attendees");
    let (s, p) = app
        .post(
            "/api/v1/bookings",
            &alice_t,
            json!({"room_id": seminar["id"], "starts_at": at(mon, 12, 0).to_string(),
               "ends_at": at(mon, 12, 30).to_string(), "title": "For Bob", "user_id": alice["id"]}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    assert_eq!(
        free_slots(&app, &bob_t, &seminar, mon).await.len(),
        4,
        "refusals keep nothing"
    );

    // A booking's page is for members: Bob sees Alice's, another tenant's member does not.
    let page = format!("/api/v1/bookings/{}", id(&first));
    let (s, seen) = app.get(&page, &bob_t).await;
    assert_eq!(s, 200, "{seen}");
    assert_eq!(seen["user_name"], "Student B-1");
    let (_, other_admin) = app.tenant("university", "advanced").await;
    let (_, stranger) = member(&app, &other_admin, "X-1", json!({})).await;
    let (s, _) = app.get(&page, &stranger).await;
    assert_eq!(s, 404);
    let (s, _) = app
        .get(&format!("/api/v1/rooms/{}", id(&seminar)), &stranger)
        .await;
    assert_eq!(s, 404);

    // Only Alice (or an admin) cancels hers; the time is free again at once.
    let cancel = format!("/api/v1/bookings/{}/cancel", id(&first));
    let (s, p) = app.post(&cancel, &bob_t, json!({})).await;
    assert_problem(s, &p, 403, "forbidden");
    let (s, cancelled) = app.post(&cancel, &alice_t, json!({})).await;
    assert_eq!(s, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let (s, again) = app.post(&cancel, &alice_t, json!({})).await;
    assert_eq!((s, again), (200, cancelled));
    assert_eq!(
        free_slots(&app, &bob_t, &seminar, mon).await,
        ["10:00", "10:30"]
    );
    let (s, _) = book(&app, &bob_t, &seminar, at(mon, 9, 30), at(mon, 10, 0)).await;
    assert_eq!(s, 201);
    let (_, mine) = app.get("/api/v1/me/bookings", &alice_t).await;
    assert_eq!(
        mine["items"],
        json!([]),
        "a cancelled booking is not to come"
    );
    let (_, mine) = app.get("/api/v1/me/bookings", &bob_t).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 2);

    // An admin books for someone (audited), and must say for whom.
    let (s, p) = app
        .post(
            "/api/v1/bookings",
            &admin,
            json!({"room_id": seminar["id"], "starts_at": at(mon, 14, 0).to_string(),
               "ends_at": at(mon, 15, 0).to_string(), "title": "Visit"}),
        )
        .await;
    assert_problem(s, &p, 422, "invalid");
    let (s, by_admin) = app
        .post(
            "/api/v1/bookings",
            &admin,
            json!({"room_id": seminar["id"], "starts_at": at(mon, 14, 0).to_string(),
               "ends_at": at(mon, 15, 0).to_string(), "title": "Visit", "user_id": alice["id"]}),
        )
        .await;
    assert_eq!(s, 201, "{by_admin}");
    let (_, audit) = app
        .get(
            &format!("/api/v1/audit?target_id={}", id(&by_admin)),
            &admin,
        )
        .await;
    assert_eq!(audit["items"][0]["action"], "booking.create", "{audit}");
    let (_, listed) = app
        .get(
            &format!("/api/v1/bookings?room_id={}&status=cancelled", id(&seminar)),
            &admin,
        )
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");

    // A member holds at most the room's max_per_person (3) bookings still to come; an
    // admin may book for them past it.
    let (s, _) = book(&app, &bob_t, &seminar, at(mon, 16, 0), at(mon, 16, 30)).await;
    assert_eq!(s, 201);
    let (s, p) = book(&app, &bob_t, &seminar, at(mon, 17, 0), at(mon, 17, 30)).await;
    assert_problem(s, &p, 409, "too_many_bookings");
    let (_, bob) = app.get("/api/v1/me", &bob_t).await;
    let (s, _) = app
        .post(
            "/api/v1/bookings",
            &admin,
            json!({"room_id": seminar["id"], "starts_at": at(mon, 17, 0).to_string(),
               "ends_at": at(mon, 17, 30).to_string(), "title": "Extra", "user_id": bob["user_id"]}),
        )
        .await;
    assert_eq!(s, 201);

    // A room with bookings to come stays; once they are over it may go, and an ended
    // booking stays on record.
    let (s, p) = app
        .delete(&format!("/api/v1/rooms/{}", id(&seminar)), &admin)
        .await;
    assert_problem(s, &p, 409, "room_booked");
    app.clock
        .advance(at(mon, 23, 0).duration_since(app.clock.now()));
    let (s, p) = app
        .post(
            &format!("/api/v1/bookings/{}/cancel", id(&second)),
            &bob_t,
            json!({}),
        )
        .await;
    assert_problem(s, &p, 409, "booking_over");
    let (s, _) = app
        .delete(&format!("/api/v1/rooms/{}", id(&seminar)), &admin)
        .await;
    assert_eq!(s, 204);
}

async fn concurrent_bookings_of_one_time_make_one(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "advanced").await;
    let hall = room(&app, &admin, "Hall").await;
    let mut tokens = Vec::new();
    for i in 0..10 {
        tokens.push(member(&app, &admin, &format!("R-{i}"), json!({})).await.1);
    }
    let mon = monday(&app);
    // Twenty requests, each overlapping 10:00–10:30, from ten people at once.
    let tries = (0..20).map(|i| {
        let token = &tokens[i % 10];
        let (from, to) = match i % 4 {
            0 => (at(mon, 10, 0), at(mon, 10, 30)),
            1 => (at(mon, 9, 30), at(mon, 10, 30)),
            2 => (at(mon, 10, 0), at(mon, 11, 0)),
            _ => (at(mon, 9, 0), at(mon, 11, 0)),
        };
        book(&app, token, &hall, from, to)
    });
    let answers = futures::future::join_all(tries).await;
    let made: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(made.len(), 1, "{answers:?}");
    for (s, p) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_problem(*s, p, 409, "slot_taken");
    }
    let (_, all) = app
        .get(&format!("/api/v1/bookings?room_id={}", id(&hall)), &admin)
        .await;
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        1,
        "the losers left nothing: {all}"
    );
    let taken = free_slots(&app, &tokens[0], &hall, mon).await;
    assert!(taken.contains(&"10:00".to_string()), "{taken:?}");

    // One member asking for six free times at once gets the room's three, no more.
    let studio = room(&app, &admin, "Studio").await;
    let tries = (0..6).map(|i| {
        let from = at(mon, 12 + i as i8, 0);
        book(
            &app,
            &tokens[1],
            &studio,
            from,
            from + SignedDuration::from_mins(30),
        )
    });
    let answers = futures::future::join_all(tries).await;
    let made = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(made, 3, "{answers:?}");
    for (s, p) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_problem(*s, p, 409, "too_many_bookings");
    }
}

async fn the_booking_app_grant_decides_who_keeps_rooms(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        return;
    };
    let (_, admin) = app.tenant("university", "advanced").await;
    let facilities = group(
        &app,
        &admin,
        json!({"name": "Facilities", "apps": ["booking"]}),
    )
    .await;
    let events = group(&app, &admin, json!({"name": "Events", "apps": ["checkin"]})).await;
    let (u1, t1) = member(&app, &admin, "G-1", json!({})).await;
    let (u2, _) = member(&app, &admin, "G-2", json!({})).await;
    let facilities_admin = sub_admin(&app, &admin, &u1, &facilities).await;
    let events_admin = sub_admin(&app, &admin, &u2, &events).await;
    let r = room(&app, &facilities_admin, "Studio").await;
    let (s, p) = app
        .post(
            "/api/v1/rooms",
            &events_admin,
            json!({"name": "X", "capacity": 2}),
        )
        .await;
    assert_problem(s, &p, 403, "not_granted");
    let (s, p) = app.get("/api/v1/rooms", &events_admin).await;
    assert_problem(s, &p, 403, "not_granted");
    let (s, p) = app
        .post("/api/v1/rooms", &t1, json!({"name": "X", "capacity": 2}))
        .await;
    assert_problem(s, &p, 403, "forbidden");
    let (s, p) = app.get("/api/v1/bookings", &t1).await;
    assert_problem(s, &p, 403, "forbidden");
    let (s, rooms) = app.get("/api/v1/rooms", &t1).await;
    assert_eq!((s, rooms["items"][0]["id"].clone()), (200, r["id"].clone()));
}
