#include "subproc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "err.h"
#include "util.h"

/* In the child, before exec: only async-signal-safe calls. */
static void child(char *const argv[], int out_fd)
{
	int devnull = open("/dev/null", O_RDONLY);
	sigset_t none;

	setpgid(0, 0);
	/* Ignored signals survive exec: the handler ignores SIGPIPE, the
	 * helper must not. */
	signal(SIGPIPE, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(out_fd, 1) < 0)
		_exit(127);
	/* The FastCGI socket and the store's files must not leak into it. */
	if (close_range(3, ~0U, 0) != 0)
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
	execv(argv[0], argv);
	_exit(127);
}

static int remaining_ms(int64_t deadline)
{
	int64_t left = (deadline - tf_mono_us()) / 1000;
	return left < 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
}

/* Reads until EOF or the deadline. Returns 0 at EOF, 1 on timeout. */
static int drain(int fd, int64_t deadline, char *out, size_t cap)
{
	size_t used = 0;
	char sink[512];

	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int n = poll(&p, 1, remaining_ms(deadline));
		ssize_t got;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return 1;
		if (used + 1 < cap)
			got = read(fd, out + used, cap - 1 - used);
		else
			got = read(fd, sink, sizeof sink);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		if (used + 1 < cap)
			used += (size_t)got;
	}
	out[used] = '\0';
	return 0;
}

int tf_subproc_capture(char *const argv[], int timeout_ms, char *out, size_t cap, int *status,
                       int *timed_out)
{
	int64_t deadline = tf_mono_us() + (int64_t)timeout_ms * 1000;
	int fds[2];
	pid_t pid;

	*timed_out = 0;
	*status = 0;
	if (cap)
		out[0] = '\0';
	if (!cap || pipe2(fds, O_CLOEXEC))
		return TF_ESYS;
	if ((pid = fork()) < 0) {
		close(fds[0]);
		close(fds[1]);
		return TF_ESYS;
	}
	if (pid == 0)
		child(argv, fds[1]);
	close(fds[1]);
	setpgid(pid, pid);   /* also here: no race with the kill below */
	*timed_out = drain(fds[0], deadline, out, cap);
	close(fds[0]);
	/* Output closed but the helper may linger: give it the rest of the time. */
	while (!*timed_out) {
		pid_t w = waitpid(pid, status, WNOHANG);
		if (w == pid)
			return TF_OK;
		if (w < 0 && errno != EINTR)
			return TF_ESYS;
		if (remaining_ms(deadline) == 0)
			*timed_out = 1;
		else
			poll(NULL, 0, 10);
	}
	kill(-pid, SIGKILL);
	kill(pid, SIGKILL);
	while (waitpid(pid, status, 0) < 0 && errno == EINTR)
		;
	return TF_OK;
}
