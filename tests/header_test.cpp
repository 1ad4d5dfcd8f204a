/* The public header compiles on its own (C11, pedantic warnings) and as C++. */
#include "ssmax/ssmax.h"

int main(void)
{
    struct ssmax_attn_params p;
    (void)p;
    return SSMAX_OK;
}
