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
 *   P11SHIM_COUNT_FILE=PATH   appends the name of each C_Login call to PATH
 *
 * The variables are read at each call. Built by the tests with the system C
 * compiler and p11-kit's pkcs11.h; never shipped.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR real;
static CK_FUNCTION_LIST shim;
static unsigned long signatures;

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
	if (n != NULL && *n != '\0' && sig != NULL &&
	    __atomic_fetch_add(&signatures, 1, __ATOMIC_SEQ_CST) >= strtoul(n, NULL, 10))
		return CKR_DEVICE_ERROR;
	return real->C_Sign(h, data, len, sig, siglen);
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
		real = l;
	}
	*list = &shim;
	return CKR_OK;
}
