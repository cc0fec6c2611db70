#include "log.h"

#include <stdio.h>
#include <string.h>
#include <syslog.h>

static int use_stderr = 1;
static int max_level = TF_LOG_INFO;
static char ident_buf[32] = "threatfeed";

void tf_log_init(const char *ident, int to_stderr)
{
	if (ident)
		snprintf(ident_buf, sizeof ident_buf, "%s", ident);
	use_stderr = to_stderr;
	if (!use_stderr)
		openlog(ident_buf, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void tf_log_set_level(int level)
{
	max_level = level;
}

/* Non-printable bytes are escaped so upstream text cannot forge log lines. */
static void escape(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

void tf_log(int level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (level > max_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	escape(line);
	if (use_stderr)
		fprintf(stderr, "%s: %s\n", ident_buf, line);
	else
		syslog(level, "%s", line);
}
