#include "err.h"

static const char *const messages[TF_ERR__COUNT] = {
	[TF_OK] = "success",
	[TF_ENOMEM] = "out of memory",
	[TF_EINVAL] = "invalid argument",
	[TF_ENOTFOUND] = "not found",
	[TF_EEXIST] = "already exists",
	[TF_ECONFLICT] = "conflict with the current state",
	[TF_ESTATE] = "illegal task state transition",
	[TF_ESTORE] = "store unavailable",
	[TF_EFULL] = "store full",
	[TF_EPERM] = "permission denied",
	[TF_ELIMIT] = "input exceeds a limit",
	[TF_ECANCELLED] = "cancelled",
	[TF_EUPSTREAM] = "upstream error",
	[TF_ENETWORK] = "network error",
	[TF_EPARSE] = "malformed upstream content",
	[TF_ESYS] = "system error",
	[TF_ENOSPACE] = "no space left on the store's disk",
};

const char *tf_strerror(int err)
{
	if (err < 0 || err >= TF_ERR__COUNT || !messages[err])
		return "unknown error";
	return messages[err];
}
