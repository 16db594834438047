/* SPDX-License-Identifier: MIT */
/*
 * state: the daemon's durable state, one JSON document in the state
 * directory. A save is atomic and durable before it returns (write a temp
 * file, fsync, rename over the old one, fsync the directory), so a change
 * acknowledged after state_save survives a crash at any point.
 */
#ifndef VPMU_STATE_H
#define VPMU_STATE_H

#include <json-c/json.h>
#include <stddef.h>

#define STATE_FORMAT 1
#define STATE_FILE "state.json"

/* Writes doc (whose "format" member state_save sets) to dir/state.json. */
int state_save(const char *dir, struct json_object *doc);

/*
 * Loads dir/state.json. Returns 0 with *doc set, or 0 with *doc NULL when
 * there is no state yet. A file that does not parse, is not an object, or
 * carries a format this daemon does not know is moved aside to
 * state.json.<reason>-<unix time> and *doc is NULL; moved_to then names the
 * new path (empty otherwise) and why says what was wrong.
 */
int state_load(const char *dir, struct json_object **doc, char *moved_to, size_t moved_len,
	       char *why, size_t whylen);

/* Moves the current state file aside (used when its content fails
 * validation beyond the format check). */
int state_move_aside(const char *dir, const char *reason, char *moved_to, size_t moved_len);

#endif
