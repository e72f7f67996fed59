/*
 * cardbridge: a virtual smart card for tests. It puts libcacard's CAC card
 * (keys and certificates in an NSS database) behind vsmartcard's vpcd
 * reader driver in pcscd. vpcd listens on PORT (reader.conf's DEVICENAME
 * /dev/null:PORT) and accepts when pcscd polls the reader; the bridge dials
 * it on loopback and answers its messages: a 2-byte big-endian length, then
 * either a 1-byte control (0 power off, 1 power on, 2 reset, 4 get ATR) or
 * a command APDU. (Debian's vpcd 3.3 cannot reconnect when it dials the
 * card itself: FD_SET(-1) aborts pcscd.) It brings up the loopback
 * interface, which a new network namespace starts without.
 *
 * It adds what a real card has and libcacard lacks: a PIN retry counter
 * (VERIFY answers 63Cx with x tries left, 6983 when none are), and what the
 * tests need: removal and re-insertion, a delay per APDU.
 *
 * Usage: cardbridge PORT NSSDB READER CERT...  (NSSDB as "sql:/dir")
 * It prints "ready" on stdout once the card is up, then reads commands,
 * one a line, from stdin, and answers each with "ok" once it has taken
 * effect:
 *   remove     the card leaves the reader: the connection to vpcd is
 *              closed and not dialed again until insert; the card is
 *              powered off (its login is gone)
 *   insert     the card is back
 *   delay MS   every APDU waits MS milliseconds first
 *   tries N    N PIN tries are left (0 blocks the PIN)
 *   stats      answers "apdus N" instead of "ok"
 * It exits when stdin ends.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <net/if.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libcacard.h>

#define MAX_TRIES 3

static VReader *reader;
static unsigned char atr[64];
static int atr_len;
static int tries = MAX_TRIES; /* PIN tries left */
static int logged_in;         /* the last VERIFY succeeded since power on */
static int delay_ms;
static int inserted = 1;
static long apdus;

/* readn reads exactly n bytes; 0 on success, -1 on error or EOF. vpcd
 * sends a message's length and its data in two writes, the second held
 * back (Nagle) until the first is acknowledged: TCP_QUICKACK before each
 * read acknowledges at once, where a delayed ACK cost ~40 ms a message. */
static int readn(int fd, unsigned char *p, size_t n) {
    int one = 1;
    while (n > 0) {
        setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* reply sends one message, length and data in one write: with TCP_NODELAY
 * set, vpcd gets it at once (two writes cost a delayed ACK, ~40 ms). */
static int reply(int fd, const unsigned char *data, int len) {
    unsigned char buf[2 + 65536];
    buf[0] = (unsigned char)(len >> 8);
    buf[1] = (unsigned char)len;
    memcpy(buf + 2, data, (size_t)len);
    size_t n = (size_t)len + 2, off = 0;
    while (off < n) {
        ssize_t w = write(fd, buf + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    return 0;
}

static void power_on(void) {
    atr_len = sizeof atr;
    vreader_power_on(reader, atr, &atr_len);
    logged_in = 0;
}

static void power_off(void) {
    vreader_power_off(reader);
    logged_in = 0;
}

/* is_verify reports whether apdu is ISO 7816 VERIFY of the CAC PIN. */
static int is_verify(const unsigned char *apdu, int len) {
    return len >= 4 && (apdu[0] & 0xf0) == 0 && apdu[1] == 0x20 && apdu[2] == 0 && apdu[3] == 0;
}

/* transmit answers one command APDU into resp, keeping the PIN counter. */
static int transmit(unsigned char *apdu, int len, unsigned char *resp) {
    int rlen = 65536;
    if (is_verify(apdu, len)) {
        int has_pin = len > 5 && apdu[4] > 0;
        if (tries == 0 || (!has_pin && !logged_in)) {
            resp[0] = tries == 0 ? 0x69 : 0x63;
            resp[1] = tries == 0 ? 0x83 : (unsigned char)(0xc0 | tries);
            return 2;
        }
        if (!has_pin) {
            resp[0] = 0x90, resp[1] = 0x00;
            return 2;
        }
        vreader_xfr_bytes(reader, apdu, len, resp, &rlen);
        if (rlen == 2 && resp[0] == 0x90 && resp[1] == 0x00) {
            tries = MAX_TRIES;
            logged_in = 1;
            return rlen;
        }
        tries--;
        logged_in = 0;
        resp[0] = tries == 0 ? 0x69 : 0x63;
        resp[1] = tries == 0 ? 0x83 : (unsigned char)(0xc0 | tries);
        return 2;
    }
    if (vreader_xfr_bytes(reader, apdu, len, resp, &rlen) != VREADER_OK) {
        resp[0] = 0x6f, resp[1] = 0x00;
        return 2;
    }
    return rlen;
}

/* serve handles one message from vpcd; -1 ends the connection. */
static int serve(int fd) {
    static unsigned char msg[65536], resp[65536];
    unsigned char hdr[2];
    if (readn(fd, hdr, 2) < 0)
        return -1;
    int len = hdr[0] << 8 | hdr[1];
    if (len == 0 || readn(fd, msg, (size_t)len) < 0)
        return -1;
    if (len == 1) {
        switch (msg[0]) {
        case 0: power_off(); return 0;
        case 1: case 2: power_on(); return 0;
        case 4: return reply(fd, atr, atr_len);
        default: return -1;
        }
    }
    if (delay_ms > 0) {
        struct timespec ts = {delay_ms / 1000, (long)(delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    apdus++;
    return reply(fd, resp, transmit(msg, len, resp));
}

/* command runs one line from stdin and acknowledges it. */
static void command(char *line, int *conn) {
    int n;
    if (strncmp(line, "remove", 6) == 0) {
        if (*conn >= 0)
            close(*conn), *conn = -1;
        if (inserted)
            power_off();
        inserted = 0;
    } else if (strncmp(line, "insert", 6) == 0) {
        inserted = 1;
    } else if (sscanf(line, "delay %d", &n) == 1) {
        delay_ms = n;
    } else if (sscanf(line, "tries %d", &n) == 1) {
        tries = n;
    } else if (strncmp(line, "stats", 5) == 0) {
        printf("apdus %ld\n", apdus);
        fflush(stdout);
        return;
    } else {
        printf("error unknown command\n");
        fflush(stdout);
        return;
    }
    printf("ok\n");
    fflush(stdout);
}

/* lo_up brings the loopback interface up: in a new network namespace it
 * starts down. */
static void lo_up(void) {
    struct ifreq ifr = {0};
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    strcpy(ifr.ifr_name, "lo");
    if (s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0 && !(ifr.ifr_flags & IFF_UP)) {
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
            perror("cardbridge: lo up");
    }
    if (s >= 0)
        close(s);
}

/* dial connects to vpcd on the loopback port; -1 if it does not listen. */
static int dial(int port) {
    int c = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (c < 0)
        return -1;
    if (connect(c, (struct sockaddr *)&addr, sizeof addr) < 0) {
        close(c);
        return -1;
    }
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return c;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: cardbridge PORT NSSDB READER CERT...\n");
        return 2;
    }
    int port = atoi(argv[1]);
    char opts[4096];
    int off = snprintf(opts, sizeof opts, "db=\"%s\" use_hw=no soft=(,%s,CAC,", argv[2], argv[3]);
    for (int i = 4; i < argc; i++)
        off += snprintf(opts + off, sizeof opts - (size_t)off, ",%s", argv[i]);
    snprintf(opts + off, sizeof opts - (size_t)off, ")");
    if (vcard_emul_init(vcard_emul_options(opts)) != VCARD_EMUL_OK) {
        fprintf(stderr, "cardbridge: vcard_emul_init failed: no certificate %s in %s?\n", argv[4], argv[2]);
        return 1;
    }
    reader = vreader_get_reader_by_name(argv[3]);
    if (reader == NULL) {
        fprintf(stderr, "cardbridge: no reader %s\n", argv[3]);
        return 1;
    }
    power_on();
    lo_up();
    printf("ready\n");
    fflush(stdout);

    int conn = -1;
    char line[256];
    size_t have = 0;
    for (;;) {
        if (conn < 0 && inserted)
            conn = dial(port); /* vpcd accepts when pcscd polls the reader */
        int polled = conn;
        struct pollfd fds[2] = {{0, POLLIN, 0}, {conn, POLLIN, 0}};
        if (poll(fds, conn >= 0 ? 2 : 1, conn >= 0 || !inserted ? -1 : 50) < 0) {
            if (errno == EINTR)
                continue;
            perror("cardbridge: poll");
            return 1;
        }
        if (fds[0].revents) {
            ssize_t r = read(0, line + have, sizeof line - 1 - have);
            if (r <= 0)
                return 0; /* stdin ended: the test is done */
            have += (size_t)r;
            char *nl;
            while ((nl = memchr(line, '\n', have)) != NULL) {
                *nl = 0;
                command(line, &conn);
                have -= (size_t)(nl + 1 - line);
                memmove(line, nl + 1, have);
            }
            if (have == sizeof line - 1)
                have = 0; /* an overlong line is dropped */
        }
        if (conn >= 0 && conn == polled && fds[1].revents && serve(conn) < 0) {
            close(conn);
            conn = -1;
            struct timespec ts = {0, 50000000L}; /* vpcd went away: wait before dialing again */
            nanosleep(&ts, NULL);
        }
    }
}
