/* test.h: minimal assert/report macros for the C tests. Each test binary
 * ends with TEST_REPORT(), which prints "N passed, M failed" and returns the
 * process exit status. */
#ifndef WSUV_TEST_H
#define WSUV_TEST_H

#include <stdio.h>
#include <string.h>

static int test_passed, test_failed;

/* Counts one check; on failure prints where and what. */
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (cond) {                                                                \
      test_passed++;                                                           \
    } else {                                                                   \
      test_failed++;                                                           \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
    }                                                                          \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                     \
  do {                                                                         \
    long long check_a_ = (long long)(a), check_b_ = (long long)(b);            \
    if (check_a_ == check_b_) {                                                \
      test_passed++;                                                           \
    } else {                                                                   \
      test_failed++;                                                           \
      fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__,      \
              __LINE__, #a, #b, check_a_, check_b_);                           \
    }                                                                          \
  } while (0)

#define CHECK_MEM(a, b, n) CHECK(memcmp((a), (b), (n)) == 0)

#define TEST_REPORT()                                                          \
  (printf("%d passed, %d failed\n", test_passed, test_failed),                 \
   test_failed ? 1 : 0)

#endif
