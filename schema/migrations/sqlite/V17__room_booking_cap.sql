-- How many bookings still to come one member may hold in a room (admins may book past it).
ALTER TABLE rooms ADD COLUMN max_per_person INTEGER NOT NULL DEFAULT 3 CHECK (max_per_person > 0);
CREATE INDEX bookings_user_room ON bookings (user_id, room_id, ends_at);
