-- Shuttle reboarding: a route may take each rider once within a number of minutes (one
-- ride per trip). 0 is no limit, as before.
ALTER TABLE shuttle_routes ADD COLUMN reboard_minutes INTEGER NOT NULL DEFAULT 0
    CHECK (reboard_minutes BETWEEN 0 AND 720);
-- The reboarding check reads a rider's latest ride on a route.
CREATE INDEX shuttle_rides_rider_route ON shuttle_rides (user_id, route_id, at);
