/* libFuzzer target: the .npy parser on arbitrary bytes. */
#include <stddef.h>
#include <stdint.h>

#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct npy_array a;
    char err[512];
    if (npy_parse("fuzz.npy", data, size, &a, err, sizeof(err)) == 0)
        npy_free(&a);
    return 0;
}
