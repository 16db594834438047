/* SPDX-License-Identifier: MIT */
/*
 * json_fields: the one strict decoder for JSON objects, driven by a table.
 *
 * A table row names a member, the JSON type it takes, whether it is
 * required, the rule its value must meet (an integer range, a length, a
 * character set, a list of names, a check function) and where in a C struct
 * it is stored. Decoding refuses members the table does not name (a typo
 * such as "prority" must not leave a default silently in force), null,
 * wrong types and values outside their rule, and names the member by its
 * path ("params.vcpus[2].cpus", "constraints[1].gp_mask").
 *
 * The same table checks a struct that was filled by other means
 * (json_fields_check): a door that decodes its own encoding gets exactly the
 * rules the JSON decoder applies.
 *
 * Wording is the caller's: the protocol answers with an error code and a
 * field, the PMU model loader with "file: field "x": ...". The decoder says
 * what is wrong (struct json_fields_problem) and the caller's report
 * function words it. Check and decode callbacks word their own messages.
 */
#ifndef VPMU_JSON_FIELDS_H
#define VPMU_JSON_FIELDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_object;

/* Paths longer than this are cut: they only label a message. Equal to
 * PROTO_FIELD_MAX so that a protocol error carries a path whole. */
#define JSON_FIELDS_PATH_MAX 96

enum json_fields_type {
	/* A JSON integer (or, with JSON_FIELDS_HEX, a string "0x" + hex
	 * digits) in [min, max] (or what .bounds says). Stored in .size bytes
	 * (1, 2, 4 or 8), signed when min < 0. */
	JSON_FIELDS_INT,
	/* Stored as bool. */
	JSON_FIELDS_BOOL,
	/* min..max bytes, no NUL inside. Copied into a char[.size], or with
	 * JSON_FIELDS_STRDUP into a malloc'd char *; .size 0: checked, not
	 * stored. */
	JSON_FIELDS_STRING,
	/* One of .names[min..max] (NULL entries are holes); stored as the
	 * index, in .size bytes (an enum). */
	JSON_FIELDS_ENUM,
	/* A nested object described by .fields, stored at .offset. */
	JSON_FIELDS_OBJECT,
	/* min..max elements, each described by .elem. Stored in place
	 * (an array of at least max elements of .elem_size bytes at .offset),
	 * or with JSON_FIELDS_HEAP in a calloc'd array whose pointer is at
	 * .offset; the number of elements goes to .count_offset. */
	JSON_FIELDS_ARRAY,
	/* .decode reads the value; .check states its rule. */
	JSON_FIELDS_CUSTOM,
};

enum {
	JSON_FIELDS_REQUIRED = 1u << 0,
	/* Decoded before unknown members are refused: a request of another
	 * protocol version must learn that first, not trip over a member this
	 * one lacks. */
	JSON_FIELDS_FIRST = 1u << 1,
	JSON_FIELDS_HEX = 1u << 2,         /* INT: "0x..." strings too */
	JSON_FIELDS_DEFAULT = 1u << 3,     /* absent: store .def (or .default_of) */
	JSON_FIELDS_STRDUP = 1u << 4,      /* STRING: stored as a malloc'd char * */
	JSON_FIELDS_HEAP = 1u << 5,        /* ARRAY: elements in a calloc'd array */
	JSON_FIELDS_NAME_CHARS = 1u << 6,  /* STRING: only A-Z a-z 0-9 . _ - */
	JSON_FIELDS_TOKEN_CHARS = 1u << 7, /* STRING: printable ASCII, no space */
	/* A stored 0 ("" in a char buffer, NULL for STRDUP) means "not
	 * given", as for an optional pid: checking a struct skips the rule
	 * then. */
	JSON_FIELDS_ZERO_UNSET = 1u << 8,
};

/* What the decoder or the checker found wrong. */
enum json_fields_kind {
	JSON_FIELDS_UNKNOWN,  /* a member the table does not name; field is NULL */
	JSON_FIELDS_MISSING,  /* a required member is absent */
	JSON_FIELDS_NULL,     /* JSON null (or a NULL string pointer in a struct) */
	JSON_FIELDS_TYPE,     /* another JSON type than the row takes */
	JSON_FIELDS_RANGE,    /* an integer outside [min, max] */
	JSON_FIELDS_SYNTAX,   /* a hex string that is not "0x" + hex digits */
	JSON_FIELDS_LENGTH,   /* a string of fewer than min or more than max bytes */
	JSON_FIELDS_CHARSET,  /* a character the row's character set excludes */
	JSON_FIELDS_NAME,     /* a string that is none of the row's names */
	JSON_FIELDS_COUNT,    /* an array of fewer than min or more than max elements */
	JSON_FIELDS_OOM,      /* storing the value needed memory there was not */
};

struct json_fields_field;

struct json_fields_problem {
	enum json_fields_kind kind;
	const char *path;
	const struct json_fields_field *field;
	struct json_object *value; /* the offending value; NULL when absent */
	/* The row's effective bounds (after .bounds) for INT, STRING and ARRAY. */
	int64_t min, max;
	size_t count;              /* COUNT: how many elements were given */
};

/* The decoding context: how problems are worded, and the caller's data
 * (reached by its callbacks). */
struct json_fields {
	/* Words the problem for the caller and returns a negative errno. */
	int (*report)(struct json_fields *jf, const struct json_fields_problem *p);
	void *user;
};

struct json_fields_field {
	const char *name;
	enum json_fields_type type;
	unsigned int flags;
	int64_t min, max;
	unsigned int digits;        /* HEX: at most this many digits (0: 16) */
	size_t offset;              /* where the value goes in the table's struct */
	size_t size;                /* INT, ENUM: bytes; STRING: the buffer's size */
	/* offsetof a bool set when the member is given, plus one (0: none):
	 * use JSON_FIELDS_FLAG(). */
	size_t present;
	int64_t def;                /* with JSON_FIELDS_DEFAULT */
	const char *const *names;   /* ENUM */
	const struct json_fields_field *fields; /* OBJECT: rows, ended by a NULL name */
	const struct json_fields_field *elem;   /* ARRAY: one element (offset 0) */
	size_t elem_size;
	size_t count_offset, count_size;        /* ARRAY: where the count goes */
	/* Words for messages: .unit names an ARRAY's elements ("vCPUs");
	 * .expect describes a CUSTOM (or any) value ("CPU list string"). */
	const char *unit;
	const char *expect;
	/* Range that depends on what was decoded before (base: the table's
	 * struct). */
	void (*bounds)(const struct json_fields *jf, const void *base, int64_t *min, int64_t *max);
	/* Default that depends on what was decoded before. */
	int64_t (*default_of)(const struct json_fields *jf, const void *base);
	/* CUSTOM: reads v (never NULL) into slot (base + offset). */
	int (*decode)(struct json_fields *jf, const struct json_fields_field *f, struct json_object *v,
		      const char *path, void *slot);
	/* The row's own rule, on the stored value: called after the member is
	 * decoded, after an absent one got its default (present false), and
	 * by json_fields_check. Words its own errors. */
	int (*check)(struct json_fields *jf, const struct json_fields_field *f, const char *path,
		     const void *base, bool present);
};

#define JSON_FIELDS_FLAG(type, member) (offsetof(type, member) + 1)
#define JSON_FIELDS_SIZE(type, member) sizeof(((type *)0)->member)

/*
 * Decodes obj against rows (ended by a row with a NULL name) into base.
 * path prefixes every member's path ("" at the top). obj NULL stands for an
 * absent object: every member is absent. Returns 0 or what the failing
 * report or callback returned; heap members stored before the failure stay
 * in base for the caller to free.
 */
int json_fields_decode(struct json_fields *jf, const struct json_fields_field *rows, struct json_object *obj,
		       const char *path, void *base);

/* One value (NULL: JSON null) against one row, into base + f->offset, with
 * the row's built-in rule but not its .check: for CUSTOM decoders that hold
 * values of a known type. */
int json_fields_decode_value(struct json_fields *jf, const struct json_fields_field *f, struct json_object *v,
			     const char *path, void *base);

/*
 * Applies the rules of rows to a struct filled by other means: ranges,
 * lengths, character sets, names, counts, nested rows and .check, for every
 * member that is present (its flag, else non-zero with ZERO_UNSET, else
 * always); a required member whose flag says absent is MISSING.
 */
int json_fields_check(struct json_fields *jf, const struct json_fields_field *rows, const void *base,
		      const char *path);

/* "integer", "string", ...: the JSON type of v, for messages. */
const char *json_fields_type_name(struct json_object *v);

/* The JSON type a row takes, for "expected ..." messages: .expect when set. */
const char *json_fields_expected(const struct json_fields_field *f);

/* path + "." + key (key's bytes outside printable ASCII shown as '?', so a
 * cut path never splits a UTF-8 sequence) and path + "[i]". */
void json_fields_path_key(char out[JSON_FIELDS_PATH_MAX], const char *path, const char *key);
void json_fields_path_index(char out[JSON_FIELDS_PATH_MAX], const char *path, size_t i);

/* Adds member key to obj, taking v: false (and v released) when v is NULL
 * or the add fails, so that builders can chain with && and give up once. */
bool json_fields_put(struct json_object *obj, const char *key, struct json_object *v);

/* Reads a stored integer as the row stores it (size and sign). */
int64_t json_fields_load_int(const void *slot, size_t size, bool is_signed);

#endif
