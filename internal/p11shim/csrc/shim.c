/*
 * p11shim: a PKCS#11 module for tests that forwards every call to a real
 * module (P11SHIM_MODULE, such as SoftHSM2) and misbehaves on request, to
 * show what no real token can show on demand:
 *
 *   P11SHIM_LOGIN_RV=0x6      a C_Login that the real module refuses with
 *                             CKR_PIN_INCORRECT returns this code instead
 *                             (CKR_FUNCTION_FAILED here), as loose drivers do
 *   P11SHIM_LOGIN_SLEEP=N     C_Login sleeps N seconds first (a slow card)
 *   P11SHIM_SIGN_FAIL_AFTER=N after N signatures, C_Sign returns
 *                             CKR_DEVICE_ERROR (a device error mid-signature)
 *                             without asking the real module, whose signing
 *                             operation stays active, as tpm2-pkcs11's does
 *   P11SHIM_SIGN_FAILURES=K   only K signatures fail (default: every one
 *                             after N)
 *   P11SHIM_SIGN_RV=0x6       the code failing signatures return instead of
 *                             CKR_DEVICE_ERROR
 *   P11SHIM_CONTEXT_LOGIN_RV=0x103
 *                             C_Login(CKU_CONTEXT_SPECIFIC) returns this
 *                             code without asking the real module
 *                             (CKR_USER_TYPE_INVALID here, as opencryptoki)
 *   P11SHIM_ALWAYS_AUTHENTICATE=1
 *                             every private key says CKA_ALWAYS_AUTHENTICATE
 *                             true, which the real module does not enforce
 *                             (opencryptoki stores it and signs without)
 *   P11SHIM_CHECK_PARAMS=1    C_Sign reads the mechanism parameters given to
 *                             C_SignInit again, as tpm2-pkcs11 1.9 does, and
 *                             when they changed or were freed returns
 *                             CKR_MECHANISM_INVALID (tpm2-pkcs11's answer)
 *                             and notes "C_Sign=parameters changed"
 *   P11SHIM_NOISE=TEXT        C_Initialize writes TEXT and a newline to
 *                             stderr, as tpm2-pkcs11 writes its errors
 *   P11SHIM_COUNT_FILE=PATH   appends the name of each C_Login call to PATH,
 *                             "C_SignInit=CKR_OPERATION_ACTIVE" when a
 *                             C_SignInit meets an operation left active, and
 *                             at C_Initialize "progname=NAME", the program
 *                             name glibc gives modules (p11-kit's enable-in
 *                             and disable-in match it)
 *
 * The variables are read at each call; the count of signatures starts again
 * at each C_Initialize. Built by the tests with the system C
 * compiler and p11-kit's pkcs11.h; never shipped.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR real;
static CK_FUNCTION_LIST shim;
static unsigned long signatures;

static void note(const char *what);

/* The parameters each session's C_SignInit was given (P11SHIM_CHECK_PARAMS):
 * the caller's pointer and a copy of what it pointed to then. */
#define HELD 64
static struct {
	CK_SESSION_HANDLE h;
	void *ptr;
	CK_ULONG len;
	unsigned char copy[64];
} held[HELD];

static int check_params(void) {
	const char *c = getenv("P11SHIM_CHECK_PARAMS");
	return c != NULL && *c != '\0';
}

/* params_changed reports whether the parameters kept for h differ now from
 * what C_SignInit saw, and forgets them when done is set. */
static int params_changed(CK_SESSION_HANDLE h, int done) {
	int i = (int)(h % HELD);
	if (held[i].ptr == NULL || held[i].h != h)
		return 0;
	int changed = memcmp(held[i].ptr, held[i].copy, held[i].len) != 0;
	if (done || changed)
		held[i].ptr = NULL;
	return changed;
}

static void note(const char *what) {
	const char *path = getenv("P11SHIM_COUNT_FILE");
	if (path == NULL || *path == '\0')
		return;
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	size_t n = strlen(what);
	if (write(fd, what, n) != (ssize_t)n || write(fd, "\n", 1) != 1) {
		/* a lost count line fails the test that reads it */
	}
	close(fd);
}

static CK_RV shim_Login(CK_SESSION_HANDLE h, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG len) {
	note(user == CKU_CONTEXT_SPECIFIC ? "C_Login(CKU_CONTEXT_SPECIFIC)" : "C_Login");
	const char *c = getenv("P11SHIM_CONTEXT_LOGIN_RV");
	if (user == CKU_CONTEXT_SPECIFIC && c != NULL && *c != '\0')
		return (CK_RV)strtoul(c, NULL, 0);
	const char *s = getenv("P11SHIM_LOGIN_SLEEP");
	if (s != NULL && *s != '\0')
		sleep((unsigned)atoi(s));
	CK_RV rv = real->C_Login(h, user, pin, len);
	const char *r = getenv("P11SHIM_LOGIN_RV");
	if (r != NULL && *r != '\0' && rv == CKR_PIN_INCORRECT)
		rv = (CK_RV)strtoul(r, NULL, 0);
	return rv;
}

static CK_RV shim_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig, CK_ULONG_PTR siglen) {
	const char *n = getenv("P11SHIM_SIGN_FAIL_AFTER");
	if (n != NULL && *n != '\0' && sig != NULL) {
		unsigned long i = __atomic_fetch_add(&signatures, 1, __ATOMIC_SEQ_CST);
		unsigned long after = strtoul(n, NULL, 10);
		const char *k = getenv("P11SHIM_SIGN_FAILURES");
		unsigned long failures = (k != NULL && *k != '\0') ? strtoul(k, NULL, 10) : 0;
		if (i >= after && (failures == 0 || i < after + failures)) {
			const char *r = getenv("P11SHIM_SIGN_RV");
			return (r != NULL && *r != '\0') ? (CK_RV)strtoul(r, NULL, 0) : CKR_DEVICE_ERROR;
		}
	}
	if (check_params() && params_changed(h, sig != NULL)) {
		note("C_Sign=parameters changed");
		return CKR_MECHANISM_INVALID;
	}
	return real->C_Sign(h, data, len, sig, siglen);
}

static CK_RV shim_Initialize(CK_VOID_PTR args) {
	__atomic_store_n(&signatures, 0, __ATOMIC_SEQ_CST);
	const char *noise = getenv("P11SHIM_NOISE");
	if (noise != NULL && *noise != '\0')
		fprintf(stderr, "%s\n", noise);
	char line[300];
	snprintf(line, sizeof line, "progname=%s", program_invocation_short_name);
	note(line);
	return real->C_Initialize(args);
}

static CK_RV shim_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n) {
	CK_RV rv = real->C_GetAttributeValue(h, o, tmpl, n);
	const char *a = getenv("P11SHIM_ALWAYS_AUTHENTICATE");
	if (rv != CKR_OK || a == NULL || *a == '\0')
		return rv;
	for (CK_ULONG i = 0; i < n; i++) {
		if (tmpl[i].type == CKA_ALWAYS_AUTHENTICATE && tmpl[i].pValue != NULL && tmpl[i].ulValueLen == sizeof(CK_BBOOL))
			*(CK_BBOOL *)tmpl[i].pValue = CK_TRUE;
	}
	return rv;
}

static CK_RV shim_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) {
	CK_RV rv = real->C_SignInit(h, mech, key);
	if (rv == CKR_OPERATION_ACTIVE)
		note("C_SignInit=CKR_OPERATION_ACTIVE");
	int i = (int)(h % HELD);
	held[i].ptr = NULL;
	if (rv == CKR_OK && check_params() && mech != NULL && mech->pParameter != NULL &&
	    mech->ulParameterLen > 0 && mech->ulParameterLen <= sizeof held[i].copy) {
		held[i].h = h;
		held[i].len = mech->ulParameterLen;
		memcpy(held[i].copy, mech->pParameter, mech->ulParameterLen);
		held[i].ptr = mech->pParameter;
	}
	return rv;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
	if (list == NULL)
		return CKR_ARGUMENTS_BAD;
	if (real == NULL) {
		const char *path = getenv("P11SHIM_MODULE");
		if (path == NULL || *path == '\0')
			return CKR_GENERAL_ERROR;
		void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
		if (lib == NULL)
			return CKR_GENERAL_ERROR;
		CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
		if (get == NULL)
			return CKR_GENERAL_ERROR;
		CK_FUNCTION_LIST_PTR l = NULL;
		CK_RV rv = get(&l);
		if (rv != CKR_OK)
			return rv;
		shim = *l;
		shim.C_Login = shim_Login;
		shim.C_Sign = shim_Sign;
		shim.C_SignInit = shim_SignInit;
		shim.C_Initialize = shim_Initialize;
		shim.C_GetAttributeValue = shim_GetAttributeValue;
		real = l;
	}
	*list = &shim;
	return CKR_OK;
}
