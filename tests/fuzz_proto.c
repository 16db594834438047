// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: bytes as they would arrive on the socket go through the
 * frame reader in chunks, and every frame through the request decoder, the
 * encoder (for accepted requests) and the error response builder; the
 * response decoder sees the same frames since vpmuctl parses untrusted
 * server output too.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "proto/proto.h"
#include "proto/response.h"

static void one_frame(const char *f, size_t n)
{
	struct proto_request req, again;
	struct proto_error err;
	struct proto_response resp;
	bool idk;
	uint64_t id;
	struct json_object *o;

	if (proto_request_decode(f, n, 64, &req, &idk, &id, &err) == 0) {
		/* what the decoder accepts, the typed rules accept */
		if (proto_request_validate(&req, 64, &err) != 0)
			abort();
		/* whatever we accept must re-encode into something we accept */
		o = proto_request_encode(&req);
		if (!o)
			abort();
		{
			const char *t = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
			bool k2;
			uint64_t id2;

			if (proto_request_decode(t, strlen(t), 64, &again, &k2, &id2, &err) != 0 ||
			    again.method != req.method || again.id != req.id)
				abort();
			proto_request_fini(&again);
		}
		json_object_put(o);
		proto_request_fini(&req);
	} else {
		o = response_error(idk, id, &err);
		if (o) {
			char *out;
			size_t len;

			/* error text echoes client bytes: it must still be one valid frame */
			if (frame_encode(o, PROTO_MAX_RESPONSE, &out, &len) == 0) {
				if (memchr(out, '\n', len) != out + len - 1)
					abort();
				if (response_decode(out, len - 1, &resp) != 0 ||
				    resp.kind != PROTO_RESP_ERROR)
					abort();
				response_fini(&resp);
				free(out);
			}
			json_object_put(o);
		}
	}
	if (response_decode(f, n, &resp) == 0)
		response_fini(&resp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct frame_reader r;
	const char *f;
	size_t n, off = 0;
	/* the first byte picks the chunk size, so splits land everywhere */
	size_t chunk = size ? (size_t)data[0] % 17 + 1 : 1;

	if (frame_reader_init(&r, 4096) < 0)
		return 0;
	while (off < size) {
		size_t take = size - off < chunk ? size - off : chunk;
		int fr = frame_reader_feed(&r, data + off, take);

		off += take;
		while (frame_reader_next(&r, &f, &n) == 1)
			one_frame(f, n);
		if (fr < 0)
			break;
	}
	frame_reader_fini(&r);
	return 0;
}
