/* The Vulkan interop header compiles on its own (C11, pedantic warnings), ssmax.h included. */
#include "ssmax/ssmax_vulkan.h"

int main(void)
{
    struct ssmax_vulkan_device d = { 0 };
    struct ssmax_vulkan_requirements r;
    (void)d, (void)r;
    return SSMAX_OK;
}
