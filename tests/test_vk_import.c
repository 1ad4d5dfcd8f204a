/* ssmax on the application's own Vulkan device and buffers (ssmax_vulkan.h), as an application
 * uses it: this test is the application. It creates its own VkInstance (with the validation layer
 * and its own debug messenger counting errors) and VkDevice on lavapipe, enabling what
 * ssmax_vulkan_device_requirements lists, its own host-visible VkBuffers that it maps and fills,
 * imports device and buffers, runs attention and a plan, reads O from its own mapping and checks
 * it against the float64 reference. After ssmax_context_destroy its device must still work, and
 * the validation layer must have reported nothing. Without lavapipe the test is skipped (77),
 * unless SSMAX_REQUIRE_DEVICE=1.
 *
 * The instance functions ssmax gets come through this test's vkGetInstanceProcAddr, which hands
 * out the loader's own functions except vkQueueSubmit (counted: each submission must come while
 * the test's queue lock is held) and, when a test asks, vkGetPhysicalDeviceQueueFamilyProperties
 * reporting the family without VK_QUEUE_COMPUTE_BIT (lavapipe has no family without compute). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"
#include "src/internal.h" // ssmax_fault_set: the core's test hook
#include "ssmax/ssmax_vulkan.h"

static struct {
    VkInstance inst;
    VkDebugUtilsMessengerEXT messenger;
    VkPhysicalDevice pd;
    VkPhysicalDeviceProperties props;
    VkPhysicalDeviceMemoryProperties mem;
    VkDevice dev;
    VkQueue queue;
    uint32_t qfam;
    struct ssmax_vulkan_requirements req;
    const char *exts[4];
    uint32_t next;
    VkPhysicalDeviceFeatures2 f2;
    VkPhysicalDeviceSubgroupSizeControlFeatures sgc;
    VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR pe;
} app;

static int validation_errors;
static int locks, unlocks, held, submits, submits_unlocked, hide_compute;

static VKAPI_ATTR VkBool32 VKAPI_CALL on_message(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                                 VkDebugUtilsMessageTypeFlagsEXT type,
                                                 const VkDebugUtilsMessengerCallbackDataEXT *d,
                                                 void *priv)
{
    (void)type, (void)priv;
    if (sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
        validation_errors++;
        printf("# validation error: %s\n", d->pMessage);
    }
    return VK_FALSE;
}

static void lock_queue(void *priv, uint32_t family, uint32_t index)
{
    assert_ptr_equal(priv, &app);
    assert_int_equal(family, app.qfam);
    assert_int_equal(index, 0);
    assert_false(held);
    held = 1;
    locks++;
}

static void unlock_queue(void *priv, uint32_t family, uint32_t index)
{
    assert_ptr_equal(priv, &app);
    assert_int_equal(family, app.qfam);
    assert_int_equal(index, 0);
    assert_true(held);
    held = 0;
    unlocks++;
}

static VKAPI_ATTR VkResult VKAPI_CALL counted_submit(VkQueue q, uint32_t n, const VkSubmitInfo *si,
                                                     VkFence f)
{
    submits++;
    submits_unlocked += !held;
    return vkQueueSubmit(q, n, si, f);
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL app_gdpa(VkDevice dev, const char *name)
{
    if (!strcmp(name, "vkQueueSubmit"))
        return (PFN_vkVoidFunction)counted_submit;
    return vkGetDeviceProcAddr(dev, name);
}

static VKAPI_ATTR void VKAPI_CALL families(VkPhysicalDevice pd, uint32_t *n,
                                          VkQueueFamilyProperties *qf)
{
    vkGetPhysicalDeviceQueueFamilyProperties(pd, n, qf);
    for (uint32_t i = 0; qf && hide_compute && i < *n; i++)
        qf[i].queueFlags &= ~(VkQueueFlags)VK_QUEUE_COMPUTE_BIT;
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL app_gipa(VkInstance inst, const char *name)
{
    if (!strcmp(name, "vkGetDeviceProcAddr"))
        return (PFN_vkVoidFunction)app_gdpa;
    if (!strcmp(name, "vkGetPhysicalDeviceQueueFamilyProperties"))
        return (PFN_vkVoidFunction)families;
    return vkGetInstanceProcAddr(inst, name);
}

static int has_layer(const char *name)
{
    uint32_t n = 0;
    vkEnumerateInstanceLayerProperties(&n, NULL);
    VkLayerProperties *l = calloc(n ? n : 1, sizeof(*l));
    int found = 0;
    if (l && vkEnumerateInstanceLayerProperties(&n, l) == VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++)
            found |= !strcmp(l[i].layerName, name);
    free(l);
    return found;
}

/* The application's instance and device on lavapipe. 0, or 77 when there is no lavapipe. */
static int app_create(void)
{
    const char *layers[] = { "VK_LAYER_KHRONOS_validation" };
    const char *iexts[] = { VK_EXT_DEBUG_UTILS_EXTENSION_NAME };
    int layer = has_layer(layers[0]);
    if (!layer)
        printf("# VK_LAYER_KHRONOS_validation is not installed: running without it\n");
    VkApplicationInfo ai = { .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .pApplicationName = "test_vk_import",
                             .apiVersion = VK_API_VERSION_1_3 };
    VkDebugUtilsMessengerCreateInfoEXT mci = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT,
        .pfnUserCallback = on_message,
    };
    // Synchronization validation too: recorded commands must carry every barrier they need.
    const VkValidationFeatureEnableEXT vfe[] = {
        VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT
    };
    VkValidationFeaturesEXT vf = { .sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
                                   .enabledValidationFeatureCount = 1,
                                   .pEnabledValidationFeatures = vfe };
    VkInstanceCreateInfo ici = { .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                 .pNext = layer ? &vf : NULL,
                                 .pApplicationInfo = &ai,
                                 .enabledLayerCount = layer ? 1 : 0,
                                 .ppEnabledLayerNames = layers,
                                 .enabledExtensionCount = layer ? 1 : 0,
                                 .ppEnabledExtensionNames = iexts };
    if (vkCreateInstance(&ici, NULL, &app.inst) != VK_SUCCESS) {
        printf("# vkCreateInstance failed: no Vulkan\n");
        return 77;
    }
    if (layer) {
        PFN_vkCreateDebugUtilsMessengerEXT cm = (PFN_vkCreateDebugUtilsMessengerEXT)
            vkGetInstanceProcAddr(app.inst, "vkCreateDebugUtilsMessengerEXT");
        if (!cm || cm(app.inst, &mci, NULL, &app.messenger) != VK_SUCCESS)
            return 1;
    }
    uint32_t n = 8;
    VkPhysicalDevice pds[8];
    if (vkEnumeratePhysicalDevices(app.inst, &n, pds) < 0)
        n = 0;
    for (uint32_t i = 0; i < n && !app.pd; i++) {
        vkGetPhysicalDeviceProperties(pds[i], &app.props);
        if (strstr(app.props.deviceName, "llvmpipe"))
            app.pd = pds[i];
    }
    if (!app.pd) {
        printf("# no lavapipe device\n");
        return 77;
    }
    vkGetPhysicalDeviceMemoryProperties(app.pd, &app.mem);

    // What ssmax asks for, asked before the device exists.
    if (ssmax_vulkan_device_requirements(vkGetInstanceProcAddr, app.inst, app.pd, &app.req) < 0) {
        printf("requirements: %s\n", ssmax_last_error(NULL));
        return 1;
    }
    printf("# ssmax asks for %u extensions, subgroupSizeControl %u, pipelineExecutableInfo %u, "
           "queue family %d\n", app.req.extension_count, app.req.subgroup_size_control,
           app.req.pipeline_executable_info, app.req.queue_family);
    if (app.req.min_api_version != VK_API_VERSION_1_1 || app.req.queue_family < 0)
        return 1;
    app.qfam = (uint32_t)app.req.queue_family;
    for (uint32_t i = 0; i < app.req.extension_count; i++)
        app.exts[app.next++] = app.req.extensions[i];
    // The application's features: ssmax's on top of its own (none here). No 16-bit storage.
    app.f2 = (VkPhysicalDeviceFeatures2){ .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2 };
    app.sgc = (VkPhysicalDeviceSubgroupSizeControlFeatures){
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES,
        .subgroupSizeControl = app.req.subgroup_size_control
    };
    app.pe = (VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR){
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR,
        .pipelineExecutableInfo = app.req.pipeline_executable_info
    };
    if (app.req.subgroup_size_control)
        app.sgc.pNext = app.f2.pNext, app.f2.pNext = &app.sgc;
    if (app.req.pipeline_executable_info)
        app.pe.pNext = app.f2.pNext, app.f2.pNext = &app.pe;
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = { .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                    .queueFamilyIndex = app.qfam,
                                    .queueCount = 1,
                                    .pQueuePriorities = &prio };
    VkDeviceCreateInfo dci = { .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                               .pNext = &app.f2,
                               .queueCreateInfoCount = 1,
                               .pQueueCreateInfos = &qci,
                               .enabledExtensionCount = app.next,
                               .ppEnabledExtensionNames = app.exts };
    if (vkCreateDevice(app.pd, &dci, NULL, &app.dev) != VK_SUCCESS)
        return 1;
    vkGetDeviceQueue(app.dev, app.qfam, 0, &app.queue);
    return 0;
}

static struct ssmax_vulkan_device app_device(void)
{
    struct ssmax_vulkan_device d;
    memset(&d, 0, sizeof(d));
    d.instance = app.inst;
    d.get_instance_proc_addr = app_gipa;
    d.physical_device = app.pd;
    d.device = app.dev;
    d.queue_family = app.qfam;
    d.queue_index = 0;
    d.queue = app.queue;
    d.api_version = VK_API_VERSION_1_3;
    d.enabled_extensions = app.exts;
    d.enabled_extension_count = app.next;
    d.enabled_features = &app.f2;
    d.lock_queue = lock_queue;
    d.unlock_queue = unlock_queue;
    d.lock_priv = &app;
    return d;
}

static ssmax_context *import_ctx(void)
{
    ssmax_context *ctx = NULL;
    assert_int_equal(ssmax_context_create(NULL, &ctx), SSMAX_OK);
    struct ssmax_vulkan_device d = app_device();
    int r = ssmax_vulkan_device_import(ctx, &d);
    if (r < 0)
        printf("import: %s\n", ssmax_last_error(ctx));
    assert_int_equal(r, SSMAX_OK);
    return ctx;
}

/* An application buffer: host-visible, coherent, mapped. */
struct abuf {
    VkBuffer buf;
    VkDeviceMemory mem;
    unsigned char *map;
    VkDeviceSize size;
};

static void abuf_create(struct abuf *b, VkDeviceSize size, VkBufferUsageFlags usage)
{
    memset(b, 0, sizeof(*b));
    VkBufferCreateInfo bci = { .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                               .size = size,
                               .usage = usage,
                               .sharingMode = VK_SHARING_MODE_EXCLUSIVE };
    assert_int_equal(vkCreateBuffer(app.dev, &bci, NULL, &b->buf), VK_SUCCESS);
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(app.dev, b->buf, &req);
    const VkMemoryPropertyFlags want =
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    uint32_t type = UINT32_MAX;
    for (uint32_t i = 0; i < app.mem.memoryTypeCount && type == UINT32_MAX; i++)
        if ((req.memoryTypeBits & (1u << i)) &&
            (app.mem.memoryTypes[i].propertyFlags & want) == want)
            type = i;
    assert_int_not_equal(type, UINT32_MAX);
    VkMemoryAllocateInfo mai = { .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                 .allocationSize = req.size,
                                 .memoryTypeIndex = type };
    assert_int_equal(vkAllocateMemory(app.dev, &mai, NULL, &b->mem), VK_SUCCESS);
    assert_int_equal(vkBindBufferMemory(app.dev, b->buf, b->mem, 0), VK_SUCCESS);
    void *p = NULL;
    assert_int_equal(vkMapMemory(app.dev, b->mem, 0, VK_WHOLE_SIZE, 0, &p), VK_SUCCESS);
    b->map = p;
    b->size = size;
}

static void abuf_destroy(struct abuf *b)
{
    vkUnmapMemory(app.dev, b->mem);
    vkDestroyBuffer(app.dev, b->buf, NULL);
    vkFreeMemory(app.dev, b->mem, NULL);
    memset(b, 0, sizeof(*b));
}

#define USAGE_ALL                                                                                  \
    (VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |                       \
     VK_BUFFER_USAGE_TRANSFER_DST_BIT)

static VkDeviceSize round_up(VkDeviceSize x, VkDeviceSize a)
{
    return (x + a - 1) / a * a;
}

/* The application's command buffer for recorded executions: a pool of the imported family, one
 * primary buffer begun, and a barrier from its host writes to the compute stage. */
struct app_cmd {
    VkCommandPool pool;
    VkCommandBuffer cmd;
};

static void cmd_begin(struct app_cmd *c)
{
    VkCommandPoolCreateInfo cpci = { .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                     .queueFamilyIndex = app.qfam };
    assert_int_equal(vkCreateCommandPool(app.dev, &cpci, NULL, &c->pool), VK_SUCCESS);
    VkCommandBufferAllocateInfo cbai = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                         .commandPool = c->pool,
                                         .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                         .commandBufferCount = 1 };
    assert_int_equal(vkAllocateCommandBuffers(app.dev, &cbai, &c->cmd), VK_SUCCESS);
    VkCommandBufferBeginInfo bi = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO };
    assert_int_equal(vkBeginCommandBuffer(c->cmd, &bi), VK_SUCCESS);
    VkMemoryBarrier before = { .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                               .srcAccessMask = VK_ACCESS_HOST_WRITE_BIT,
                               .dstAccessMask = VK_ACCESS_SHADER_READ_BIT |
                                                VK_ACCESS_SHADER_WRITE_BIT };
    vkCmdPipelineBarrier(c->cmd, VK_PIPELINE_STAGE_HOST_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                         0, 1, &before, 0, NULL, 0, NULL);
}

/* Ends it with a barrier from the compute stage's writes to the host, submits it with the test's
 * own fence and waits; then the pool may go (cmd_free). */
static void cmd_submit_wait(struct app_cmd *c)
{
    VkMemoryBarrier after = { .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                              .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                              .dstAccessMask = VK_ACCESS_HOST_READ_BIT };
    vkCmdPipelineBarrier(c->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                         0, 1, &after, 0, NULL, 0, NULL);
    assert_int_equal(vkEndCommandBuffer(c->cmd), VK_SUCCESS);
    VkFenceCreateInfo fci = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
    VkFence fence;
    assert_int_equal(vkCreateFence(app.dev, &fci, NULL, &fence), VK_SUCCESS);
    VkSubmitInfo si = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                        .commandBufferCount = 1,
                        .pCommandBuffers = &c->cmd };
    assert_int_equal(vkQueueSubmit(app.queue, 1, &si, fence), VK_SUCCESS);
    assert_int_equal(vkWaitForFences(app.dev, 1, &fence, VK_TRUE, 60ull * 1000000000ull),
                     VK_SUCCESS);
    vkDestroyFence(app.dev, fence, NULL);
}

static void cmd_free(struct app_cmd *c)
{
    vkDestroyCommandPool(app.dev, c->pool, NULL);
    memset(c, 0, sizeof(*c));
}

/* One problem on the application's buffers: Q, K, V and O in one VkBuffer, each its own imported
 * range at an aligned offset, each tensor a further 32 bytes into its range. use_plan: through
 * ssmax_plan_create / ssmax_plan_execute (twice). */
static void run_case(ssmax_context *ctx, struct ssmax_attn_params p, int use_plan)
{
    char desc[128];
    struct hcase hc = { .p = p };
    h_describe(&hc, desc, sizeof(desc));
    const size_t esz = p.dtype == SSMAX_F16 ? 2 : 4;
    const size_t nq = (size_t)p.batch * p.q_heads * p.q_len * p.head_dim;
    const size_t nkv = (size_t)p.batch * p.kv_heads * p.kv_len * p.head_dim;
    const VkDeviceSize toff = 32, align = app.props.limits.minStorageBufferOffsetAlignment;
    const size_t bytes[4] = { nq * esz, nkv * esz, nkv * esz, nq * esz };
    VkDeviceSize off[4], total = align; // range 0 starts one alignment in: a non-zero base
    for (int i = 0; i < 4; i++) {
        off[i] = total;
        total = round_up(total + toff + bytes[i], align);
    }
    struct abuf ab;
    abuf_create(&ab, total, USAGE_ALL);
    uint64_t seed = 0x5eed ^ nq ^ ((uint64_t)p.kv_len << 20);
    void *host[3];
    for (int i = 0; i < 3; i++) {
        host[i] = malloc(bytes[i]);
        h_fill(host[i], p.dtype, bytes[i] / esz, 1.0, &seed);
        memcpy(ab.map + off[i] + toff, host[i], bytes[i]);
    }
    memset(ab.map + off[3], 0x7f, toff + bytes[3]);
    ssmax_buffer *b[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, off[i], toff + bytes[i],
                                                    USAGE_ALL, &b[i]),
                         SSMAX_OK);
    assert_int_equal(ssmax_buffer_size(ctx, b[3]), toff + bytes[3]);
    struct ssmax_attn_buffers bufs = { .q = b[0], .k = b[1], .v = b[2], .o = b[3],
                                       .q_off = toff, .k_off = toff, .v_off = toff,
                                       .o_off = toff };
    const int locks0 = locks, submits0 = submits;
    int r;
    if (use_plan) {
        ssmax_plan *plan = NULL;
        r = ssmax_plan_create(ctx, &p, 0, &plan);
        for (int k = 0; k < 2 && r == SSMAX_OK; k++)
            r = ssmax_plan_execute(ctx, plan, &bufs, NULL);
        ssmax_plan_destroy(ctx, &plan);
    } else {
        r = ssmax_attn(ctx, &p, &bufs);
    }
    if (r < 0)
        printf("%s: %s\n", desc, ssmax_last_error(ctx));
    assert_int_equal(r, SSMAX_OK);
    assert_true(submits > submits0);
    assert_int_equal(locks - locks0, submits - submits0);
    assert_int_equal(submits_unlocked, 0);
    assert_int_equal(locks, unlocks);
    enum ssmax_path path = SSMAX_PATH_AUTO;
    uint32_t splits = 0;
    assert_int_equal(ssmax_last_path(ctx, &path, &splits), SSMAX_OK);
    if (p.path != SSMAX_PATH_AUTO)
        assert_int_equal(path, p.path);

    double *oref = malloc(nq * sizeof(double));
    struct ssmax_attn_host io = { host[0], host[1], host[2], NULL, NULL, NULL, oref, NULL };
    assert_int_equal(ssmax_attn_ref(&p, &io), SSMAX_OK);
    struct ssmax_compare c;
    const void *got = ab.map + off[3] + toff;
    if (p.dtype == SSMAX_F16)
        ssmax_compare_f16(oref, got, nq, 0, &c);
    else
        ssmax_compare_f32(oref, got, nq, 0, &c);
    struct htol tol = h_tol_o(p.dtype, c.max_ref);
    if (p.dtype == SSMAX_F16)
        ssmax_compare_f16(oref, got, nq, tol.max_abs, &c);
    else
        ssmax_compare_f32(oref, got, nq, tol.max_abs, &c);
    printf("# %s%s: path %d splits %u, nmse %.3g (limit %.1g), max_abs %.3g (limit %.3g)\n", desc,
           use_plan ? " (plan)" : "", (int)path, splits, c.nmse, tol.nmse, c.max_abs, tol.max_abs);
    assert_true(c.nmse <= tol.nmse);
    assert_true(c.max_abs <= tol.max_abs);
    assert_int_equal(c.nonfinite_mismatch, 0);
    // The bytes before O's tensor offset are the application's: untouched.
    for (VkDeviceSize i = 0; i < toff; i++)
        assert_int_equal(ab.map[off[3] + i], 0x7f);

    for (int i = 0; i < 4; i++) {
        ssmax_buffer_destroy(ctx, &b[i]);
        assert_null(b[i]);
    }
    // ssmax dropped only its handles: the buffer and its mapping are the application's still.
    assert_int_equal(memcmp(ab.map + off[0] + toff, host[0], bytes[0]), 0);
    abuf_destroy(&ab);
    for (int i = 0; i < 3; i++)
        free(host[i]);
    free(oref);
}

static struct ssmax_attn_params params(enum ssmax_dtype t, uint32_t hq, uint32_t hkv, uint32_t lq,
                                       uint32_t lk, uint32_t d, int causal, enum ssmax_path path)
{
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p);
    p.dtype = t, p.batch = 1, p.q_heads = hq, p.kv_heads = hkv, p.q_len = lq, p.kv_len = lk;
    p.head_dim = d, p.causal = causal, p.path = path;
    if (path == SSMAX_PATH_SPLIT_KV)
        p.kv_splits = 3;
    return p;
}

static void test_attention(void **state)
{
    (void)state;
    ssmax_context *ctx = NULL;
    assert_int_equal(ssmax_context_create(NULL, &ctx), SSMAX_OK);
    // An open device of ssmax's own is closed by the import, as by ssmax_device_open.
    assert_int_equal(ssmax_device_open(ctx, -1), SSMAX_OK);
    struct ssmax_vulkan_device dev = app_device();
    assert_int_equal(ssmax_vulkan_device_import(ctx, &dev), SSMAX_OK);
    struct ssmax_device_info info;
    assert_int_equal(ssmax_device_current(ctx, &info), SSMAX_OK);
    assert_int_equal(info.backend, SSMAX_BACKEND_VULKAN);
    assert_int_equal(info.index, -1);
    assert_string_equal(info.name, app.props.deviceName);
    assert_int_equal(info.compile_only, 0);
    assert_int_equal(info.fp16_storage, 0); // not enabled by the application
    assert_int_equal(info.fp16_arith, 0);

    const enum ssmax_dtype types[] = { SSMAX_F32, SSMAX_F16 };
    for (int t = 0; t < 2; t++) {
        run_case(ctx, params(types[t], 4, 4, 33, 77, 64, 0, SSMAX_PATH_FUSED), 0);
        run_case(ctx, params(types[t], 6, 2, 5, 301, 40, 1, SSMAX_PATH_SPLIT_KV), 0);
        run_case(ctx, params(types[t], 6, 3, 29, 61, 24, 1, SSMAX_PATH_UNFUSED), 0);
        run_case(ctx, params(types[t], 8, 2, 1, 130, 64, 1, SSMAX_PATH_AUTO), 1);
    }
    struct ssmax_attn_params two = params(SSMAX_F32, 2, 1, 17, 45, 32, 1, SSMAX_PATH_AUTO);
    two.batch = 2;
    run_case(ctx, two, 0);

    // ssmax_buffer_write and _read on an imported range: staging copies on the application's
    // queue, at the range's offset.
    struct abuf ab;
    abuf_create(&ab, 4096, USAGE_ALL);
    memset(ab.map, 0, 4096);
    ssmax_buffer *b = NULL;
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, 1024, 512, USAGE_ALL, &b), SSMAX_OK);
    unsigned char src[100], back[100];
    for (int i = 0; i < 100; i++)
        src[i] = (unsigned char)(i * 7 + 1);
    const int s0 = submits;
    assert_int_equal(ssmax_buffer_write(ctx, b, 12, src, sizeof(src)), SSMAX_OK);
    assert_int_equal(memcmp(ab.map + 1024 + 12, src, sizeof(src)), 0);
    assert_int_equal(ab.map[1024 + 11], 0);
    assert_int_equal(ab.map[1024 + 112], 0);
    assert_int_equal(ssmax_buffer_read(ctx, b, 12, back, sizeof(back)), SSMAX_OK);
    assert_int_equal(memcmp(back, src, sizeof(src)), 0);
    assert_true(submits >= s0 + 2);
    assert_int_equal(submits_unlocked, 0);
    // Past the range: refused as for any buffer.
    assert_int_equal(ssmax_buffer_write(ctx, b, 500, src, 13), SSMAX_ERR_INVALID_ARG);
    ssmax_buffer_destroy(ctx, &b);
    ssmax_context_destroy(&ctx);
    // The context is gone; the application's buffer and mapping are not.
    assert_int_equal(memcmp(ab.map + 1024 + 12, src, sizeof(src)), 0);
    abuf_destroy(&ab);
    assert_int_equal(locks, unlocks);
    assert_int_equal(validation_errors, 0);
}

/* Imported buffers closed with the device: destroyed contexts leave the application's alone. */
static void test_close_with_buffers(void **state)
{
    (void)state;
    ssmax_context *ctx = import_ctx();
    struct abuf ab;
    abuf_create(&ab, 4096, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT);
    ssmax_buffer *b = NULL;
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, 0, 4096,
                                                VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, &b),
                     SSMAX_OK);
    // Without TRANSFER_SRC / TRANSFER_DST, the staging copies cannot work: refused, named.
    char tmp[16] = { 0 };
    assert_int_equal(ssmax_buffer_write(ctx, b, 0, tmp, 16), SSMAX_ERR_UNSUPPORTED);
    assert_non_null(strstr(ssmax_last_error(ctx), "VK_BUFFER_USAGE_TRANSFER_DST_BIT"));
    assert_int_equal(ssmax_buffer_read(ctx, b, 0, tmp, 16), SSMAX_ERR_UNSUPPORTED);
    assert_non_null(strstr(ssmax_last_error(ctx), "VK_BUFFER_USAGE_TRANSFER_SRC_BIT"));
    // A second import replaces the device: the handles of the first are gone, the VkBuffer not.
    struct ssmax_vulkan_device d = app_device();
    assert_int_equal(ssmax_vulkan_device_import(ctx, &d), SSMAX_OK);
    assert_int_equal(ssmax_buffer_size(ctx, b), 0);
    ssmax_context_destroy(&ctx);
    abuf_destroy(&ab);
    assert_int_equal(validation_errors, 0);
}

static void test_bad_input(void **state)
{
    (void)state;
    struct ssmax_vulkan_requirements req;
    memset(&req, 0xab, sizeof(req));
    assert_int_equal(ssmax_vulkan_device_requirements(NULL, app.inst, app.pd, &req),
                     SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(NULL), "gipa"));
    assert_int_equal(ssmax_vulkan_device_requirements(vkGetInstanceProcAddr, NULL, app.pd, &req),
                     SSMAX_ERR_INVALID_ARG);
    assert_int_equal(ssmax_vulkan_device_requirements(vkGetInstanceProcAddr, app.inst, NULL, &req),
                     SSMAX_ERR_INVALID_ARG);
    assert_int_equal(ssmax_vulkan_device_requirements(vkGetInstanceProcAddr, app.inst, app.pd, NULL),
                     SSMAX_ERR_INVALID_ARG);
    assert_int_equal(req.extension_count, 0xabababab); // untouched

    ssmax_context *ctx = NULL;
    assert_int_equal(ssmax_context_create(NULL, &ctx), SSMAX_OK);
    assert_int_equal(ssmax_vulkan_device_import(NULL, NULL), SSMAX_ERR_INVALID_ARG);
    assert_int_equal(ssmax_vulkan_device_import(ctx, NULL), SSMAX_ERR_INVALID_ARG);
    // An open device of ssmax's own: imported VkBuffers cannot be used on it.
    int cpu = ssmax_device_find(ctx, "cpu");
    assert_true(cpu >= 0);
    assert_int_equal(ssmax_device_open(ctx, cpu), SSMAX_OK);
    struct abuf ab;
    abuf_create(&ab, 4096, USAGE_ALL);
    ssmax_buffer *const sentinel = (ssmax_buffer *)(uintptr_t)0x1234;
    ssmax_buffer *b = sentinel;
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, 0, 64, USAGE_ALL, &b),
                     SSMAX_ERR_UNSUPPORTED);
    assert_non_null(strstr(ssmax_last_error(ctx), "ssmax_vulkan_device_import"));
    assert_ptr_equal(b, sentinel);

    // Each field named; the open device (the CPU) stays open after each refusal.
    static const struct {
        const char *field;
        int code;
    } cases[] = {
        { "d->instance", SSMAX_ERR_INVALID_ARG },
        { "d->get_instance_proc_addr", SSMAX_ERR_INVALID_ARG },
        { "d->physical_device", SSMAX_ERR_INVALID_ARG },
        { "d->device", SSMAX_ERR_INVALID_ARG },
        { "d->queue_family", SSMAX_ERR_INVALID_ARG },  // out of range
        { "d->queue_index", SSMAX_ERR_INVALID_ARG },   // out of range
        { "d->queue_family", SSMAX_ERR_UNSUPPORTED },  // no compute
        { "d->lock_queue", SSMAX_ERR_INVALID_ARG },    // one callback without the other
        { "d->reserved", SSMAX_ERR_INVALID_ARG },
        { "d->api_version", SSMAX_ERR_UNSUPPORTED },   // Vulkan 1.0
        { "d->enabled_features", SSMAX_ERR_INVALID_ARG }, // not a VkPhysicalDeviceFeatures2
    };
    VkPhysicalDeviceFeatures2 bogus = { .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ssmax_vulkan_device d = app_device();
        switch (i) {
        case 0: d.instance = VK_NULL_HANDLE; break;
        case 1: d.get_instance_proc_addr = NULL; break;
        case 2: d.physical_device = VK_NULL_HANDLE; break;
        case 3: d.device = VK_NULL_HANDLE; break;
        case 4: d.queue_family = 99; break;
        case 5: d.queue_index = 5; break;
        case 6: hide_compute = 1; break;
        case 7: d.unlock_queue = NULL; break;
        case 8: d.reserved[3] = 1; break;
        case 9: d.api_version = VK_API_VERSION_1_0; break;
        case 10: d.enabled_features = &bogus; break;
        }
        int r = ssmax_vulkan_device_import(ctx, &d);
        hide_compute = 0;
        printf("# %s: %s\n", cases[i].field, ssmax_last_error(ctx));
        assert_int_equal(r, cases[i].code);
        assert_non_null(strstr(ssmax_last_error(ctx), cases[i].field));
        struct ssmax_device_info info;
        assert_int_equal(ssmax_device_current(ctx, &info), SSMAX_OK);
        assert_int_equal(info.backend, SSMAX_BACKEND_CPU);
    }

    // Buffer import on the imported device.
    struct ssmax_vulkan_device d = app_device();
    assert_int_equal(ssmax_vulkan_device_import(ctx, &d), SSMAX_OK);
    const VkDeviceSize align = app.props.limits.minStorageBufferOffsetAlignment;
    static const struct {
        const char *arg;
        int null_buf;
        VkDeviceSize off, size;
        VkBufferUsageFlags usage;
    } bad[] = {
        { "buf", 1, 0, 64, USAGE_ALL },
        { "size", 0, 0, 0, USAGE_ALL },
        { "offset + size", 0, UINT64_MAX - 63, 128, USAGE_ALL },
        { "usage", 0, 0, 64, VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT },
        { "offset", 0, 1, 64, USAGE_ALL }, // misaligned (where the alignment is above 1)
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (!strcmp(bad[i].arg, "offset") && align <= 1)
            continue;
        b = sentinel;
        int r = ssmax_vulkan_buffer_import(ctx, bad[i].null_buf ? VK_NULL_HANDLE : ab.buf,
                                           bad[i].off, bad[i].size, bad[i].usage, &b);
        printf("# %s: %s\n", bad[i].arg, ssmax_last_error(ctx));
        assert_int_equal(r, SSMAX_ERR_INVALID_ARG);
        assert_non_null(strstr(ssmax_last_error(ctx), bad[i].arg));
        assert_ptr_equal(b, sentinel);
    }
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, 0, 64, USAGE_ALL, NULL),
                     SSMAX_ERR_INVALID_ARG);
    // Ranges of one VkBuffer are one buffer to the checks: O over Q's bytes is refused, and so is
    // another usage for the same VkBuffer.
    ssmax_buffer *r4[4];
    const VkDeviceSize x = align > 64 ? align : 64; // O's range starts where Q's tensor does
    const VkDeviceSize at[4] = { 0, 512, 1024, x };
    for (int i = 0; i < 4; i++)
        assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, at[i], 512, USAGE_ALL, &r4[i]),
                         SSMAX_OK);
    b = sentinel;
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, 1024, 64,
                                                VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, &b),
                     SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(ctx), "usage"));
    assert_ptr_equal(b, sentinel);
    struct ssmax_attn_params op = params(SSMAX_F32, 1, 1, 2, 2, 8, 0, SSMAX_PATH_AUTO);
    struct ssmax_attn_buffers ob = { .q = r4[0], .k = r4[1], .v = r4[2], .o = r4[3],
                                     .q_off = (size_t)x };
    assert_int_equal(ssmax_attn(ctx, &op, &ob), SSMAX_ERR_INVALID_ARG);
    printf("# overlap: %s\n", ssmax_last_error(ctx));
    assert_non_null(strstr(ssmax_last_error(ctx), "overlap"));
    ob.o = r4[2], ob.v = r4[3]; // V over Q: inputs may share bytes
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, 2048, 512, USAGE_ALL, &ob.o),
                     SSMAX_OK);
    assert_int_equal(ssmax_attn(ctx, &op, &ob), SSMAX_OK);
    for (int i = 0; i < 4; i++)
        ssmax_buffer_destroy(ctx, &r4[i]);
    ssmax_buffer_destroy(ctx, &ob.o);
    // A handle of another context is refused as for any buffer.
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, 0, 64, USAGE_ALL, &b), SSMAX_OK);
    ssmax_context *other = import_ctx();
    assert_int_equal(ssmax_buffer_size(other, b), 0);
    ssmax_context_destroy(&other);
    ssmax_context_destroy(&ctx);
    abuf_destroy(&ab);
    assert_int_equal(validation_errors, 0);
}

static void app_device_works(void);

/* The kernels a GPU gets (SSMAX_VK_PLAN_AS=amd) ask for a subgroup size only where the
 * application enabled subgroupSizeControl: on a second device of the application's made with no
 * extension or feature, ssmax plans without it and the validation layer stays quiet. */
static void test_features_as_enabled(void **state)
{
    (void)state;
    setenv("SSMAX_VK_PLAN_AS", "amd", 1);
    struct ssmax_plan_info pi;
    ssmax_context *ctx = import_ctx();
    run_case(ctx, params(SSMAX_F32, 4, 2, 40, 70, 64, 1, SSMAX_PATH_FUSED), 0);
    assert_int_equal(ssmax_last_plan(ctx, &pi), SSMAX_OK);
    printf("# subgroupSizeControl enabled: %s: %s\n", pi.kernel, pi.why);
    if (app.req.subgroup_size_control)
        assert_non_null(strstr(pi.why, "subgroups of"));
    ssmax_context_destroy(&ctx);

    VkDevice main_dev = app.dev;
    VkQueue main_queue = app.queue;
    uint32_t main_next = app.next;
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = { .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                    .queueFamilyIndex = app.qfam,
                                    .queueCount = 1,
                                    .pQueuePriorities = &prio };
    VkDeviceCreateInfo dci = { .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                               .queueCreateInfoCount = 1,
                               .pQueueCreateInfos = &qci };
    VkDevice bare;
    assert_int_equal(vkCreateDevice(app.pd, &dci, NULL, &bare), VK_SUCCESS);
    app.dev = bare, app.next = 0;
    vkGetDeviceQueue(bare, app.qfam, 0, &app.queue);
    assert_int_equal(ssmax_context_create(NULL, &ctx), SSMAX_OK);
    struct ssmax_vulkan_device d = app_device();
    d.enabled_features = NULL;
    d.queue = VK_NULL_HANDLE; // ssmax fetches it
    assert_int_equal(ssmax_vulkan_device_import(ctx, &d), SSMAX_OK);
    run_case(ctx, params(SSMAX_F32, 4, 2, 40, 70, 64, 1, SSMAX_PATH_FUSED), 0);
    assert_int_equal(ssmax_last_plan(ctx, &pi), SSMAX_OK);
    printf("# nothing enabled: %s: %s\n", pi.kernel, pi.why);
    assert_null(strstr(pi.why, "subgroups of"));
    run_case(ctx, params(SSMAX_F16, 4, 2, 3, 200, 64, 1, SSMAX_PATH_SPLIT_KV), 0);
    ssmax_context_destroy(&ctx);
    unsetenv("SSMAX_VK_PLAN_AS");
    assert_int_equal(vkDeviceWaitIdle(bare), VK_SUCCESS);
    vkDestroyDevice(bare, NULL);
    app.dev = main_dev, app.queue = main_queue, app.next = main_next;
    assert_int_equal(validation_errors, 0);
}

/* Failures on the application's device: an allocation that fails while the import sets up
 * leaves no device open and the application's intact; a lost submission fails the context only. */
static void test_faults(void **state)
{
    (void)state;
    ssmax_context *ctx = NULL;
    assert_int_equal(ssmax_context_create(NULL, &ctx), SSMAX_OK);
    ssmax_fault_set(ctx, 1, 0);
    struct ssmax_vulkan_device d = app_device();
    assert_int_equal(ssmax_vulkan_device_import(ctx, &d), SSMAX_ERR_OUT_OF_DEVICE_MEMORY);
    struct ssmax_device_info info;
    assert_int_equal(ssmax_device_current(ctx, &info), SSMAX_ERR_NO_DEVICE);
    ssmax_fault_set(ctx, 0, 1);
    assert_int_equal(ssmax_vulkan_device_import(ctx, &d), SSMAX_OK);
    struct abuf ab;
    abuf_create(&ab, 4096, USAGE_ALL);
    ssmax_buffer *b = NULL;
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, 0, 4096, USAGE_ALL, &b), SSMAX_OK);
    char tmp[64] = { 0 };
    assert_int_equal(ssmax_buffer_write(ctx, b, 0, tmp, sizeof(tmp)), SSMAX_ERR_DEVICE_LOST);
    assert_int_equal(ssmax_buffer_write(ctx, b, 0, tmp, sizeof(tmp)), SSMAX_ERR_CONTEXT_FAILED);
    assert_int_equal(locks, unlocks);
    ssmax_context_destroy(&ctx);
    abuf_destroy(&ab);
    app_device_works();
    assert_int_equal(validation_errors, 0);
}

/* After every context: the application's device works. */
static void app_device_works(void)
{
    assert_int_equal(vkDeviceWaitIdle(app.dev), VK_SUCCESS);
    struct abuf ab;
    abuf_create(&ab, 256, USAGE_ALL);
    abuf_destroy(&ab);
    struct app_cmd ac; // an empty command buffer (two barriers) runs to its fence
    cmd_begin(&ac);
    cmd_submit_wait(&ac);
    cmd_free(&ac);
}

/* Recording into the application's command buffer: a decode loop's steps (one plan, the cache
 * growing) recorded into one command buffer between the application's own barriers, submitted
 * once by the application; ssmax submits nothing while recording. Checked against the reference
 * for the last step, under synchronization validation. */
static void test_recorded(void **state)
{
    (void)state;
    ssmax_context *ctx = import_ctx();
    const uint32_t cap = 300, D = 64, hq = 4, hkv = 2;
    struct ssmax_attn_params p = params(SSMAX_F32, hq, hkv, 1, cap, D, 1, SSMAX_PATH_AUTO);
    const size_t nq = (size_t)hq * D, nkv = (size_t)hkv * cap * D;
    const VkDeviceSize align = app.props.limits.minStorageBufferOffsetAlignment;
    const VkDeviceSize oq = 0, ok = round_up(nq * 4, align), ov = ok + round_up(nkv * 4, align);
    const VkDeviceSize oo = ov + round_up(nkv * 4, align), total = oo + round_up(nq * 4, align);
    struct abuf ab;
    abuf_create(&ab, total, USAGE_ALL);
    uint64_t seed = 777;
    float *hqv = malloc(nq * 4), *hk = malloc(nkv * 4), *hv = malloc(nkv * 4);
    h_fill(hqv, SSMAX_F32, nq, 1, &seed);
    h_fill(hk, SSMAX_F32, nkv, 1, &seed);
    h_fill(hv, SSMAX_F32, nkv, 1, &seed);
    memcpy(ab.map + oq, hqv, nq * 4);
    memcpy(ab.map + ok, hk, nkv * 4);
    memcpy(ab.map + ov, hv, nkv * 4);
    ssmax_buffer *bq, *bk, *bv, *bo;
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, oq, nq * 4, USAGE_ALL, &bq), 0);
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, ok, nkv * 4, USAGE_ALL, &bk), 0);
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, ov, nkv * 4, USAGE_ALL, &bv), 0);
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, oo, nq * 4, USAGE_ALL, &bo), 0);
    struct ssmax_attn_buffers bufs = { .q = bq, .k = bk, .v = bv, .o = bo };
    for (int path = 0; path <= 3; path++) {
        p.path = (enum ssmax_path)path;
        p.kv_splits = path == SSMAX_PATH_SPLIT_KV ? 3 : 0;
        ssmax_plan *plan = NULL;
        assert_int_equal(ssmax_plan_create(ctx, &p, 0, &plan), SSMAX_OK);
        struct app_cmd ac;
        cmd_begin(&ac);
        const int s0 = submits;
        static const uint32_t steps[] = { 1, 7, 113, 299, 300 };
        for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
            struct ssmax_exec_args a;
            ssmax_exec_args_default(&a);
            a.kv_len = steps[i];
            int r = ssmax_vulkan_plan_record(ctx, plan, ac.cmd, &bufs, &a);
            if (r < 0)
                fail_msg("record step %zu: %s", i, ssmax_last_error(ctx));
        }
        assert_int_equal(submits, s0); // recorded, not submitted
        memset(ab.map + oo, 0xff, nq * 4);
        cmd_submit_wait(&ac);
        // The last step saw all 300 keys: as ssmax_attn_ref over them.
        double *ref = malloc(nq * sizeof(double));
        struct ssmax_attn_host io = { hqv, hk, hv, NULL, NULL, NULL, ref, NULL };
        struct ssmax_attn_params rp = p;
        rp.path = SSMAX_PATH_AUTO, rp.kv_splits = 0;
        assert_int_equal(ssmax_attn_ref(&rp, &io), SSMAX_OK);
        struct ssmax_compare c;
        ssmax_compare_f32(ref, (const float *)(ab.map + oo), nq, 0, &c);
        struct htol tol = h_tol_o(SSMAX_F32, c.max_ref);
        printf("# recorded path %d: nmse %.3g max_abs %.3g\n", path, c.nmse, c.max_abs);
        assert_true(c.nmse <= tol.nmse && c.max_abs <= tol.max_abs && !c.nonfinite_mismatch);
        struct ssmax_plan_info pi;
        assert_int_equal(ssmax_last_plan(ctx, &pi), SSMAX_OK);
        if (path)
            assert_int_equal(pi.path, path);
        ssmax_plan_destroy(ctx, &plan); // its command buffer completed
        cmd_free(&ac);
        free(ref);
    }
    // Bad input: a NULL command buffer; recording on a device ssmax made itself.
    ssmax_plan *plan = NULL;
    assert_int_equal(ssmax_plan_create(ctx, &p, 0, &plan), SSMAX_OK);
    assert_int_equal(ssmax_vulkan_plan_record(ctx, plan, VK_NULL_HANDLE, &bufs, NULL),
                     SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(ctx), "cmd"));
    ssmax_buffer_destroy(ctx, &bq), ssmax_buffer_destroy(ctx, &bk);
    ssmax_buffer_destroy(ctx, &bv), ssmax_buffer_destroy(ctx, &bo);
    assert_int_equal(ssmax_device_open(ctx, ssmax_device_find(ctx, "vulkan")), SSMAX_OK);
    ssmax_plan *own = NULL;
    assert_int_equal(ssmax_plan_create(ctx, &p, 0, &own), SSMAX_OK);
    assert_int_equal(ssmax_vulkan_plan_record(ctx, own, (VkCommandBuffer)(uintptr_t)1, &bufs, NULL),
                     SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(ctx), "ssmax_vulkan_device_import"));
    ssmax_context_destroy(&ctx);
    abuf_destroy(&ab);
    free(hqv), free(hk), free(hv);
    assert_int_equal(validation_errors, 0);
}

/* SPEC.md section 7 recorded: a per-head f16 mask, a window, soft-capping and sinks, over
 * executions of growing kv_len in one command buffer (mask_count before the kernels each time,
 * under synchronization validation); the last one against the reference. */
static void test_recorded_inference(void **state)
{
    (void)state;
    ssmax_context *ctx = import_ctx();
    const uint32_t cap = 300, D = 64, hq = 4, hkv = 2, lq = 2;
    struct ssmax_attn_params p = params(SSMAX_F32, hq, hkv, lq, cap, D, 1, SSMAX_PATH_AUTO);
    const float sinks[4] = { 0.5f, -1.0f, 2.0f, 0.0f };
    p.window = 50, p.softcap = 3.0f, p.sinks = sinks;
    p.mask = SSMAX_MASK_BH_LQ_LK, p.mask_dtype = SSMAX_F16;
    const size_t nq = (size_t)hq * lq * D, nkv = (size_t)hkv * cap * D, nm = (size_t)hq * lq * cap;
    const VkDeviceSize align = app.props.limits.minStorageBufferOffsetAlignment;
    const VkDeviceSize oq = 0, ok = round_up(nq * 4, align), ov = ok + round_up(nkv * 4, align);
    const VkDeviceSize oo = ov + round_up(nkv * 4, align), om = oo + round_up(nq * 4, align);
    const VkDeviceSize total = om + round_up(nm * 2, align);
    struct abuf ab;
    abuf_create(&ab, total, USAGE_ALL);
    uint64_t seed = 4242;
    float *hqv = malloc(nq * 4), *hk = malloc(nkv * 4), *hv = malloc(nkv * 4);
    uint16_t *hm = malloc(nm * 2);
    h_fill(hqv, SSMAX_F32, nq, 1, &seed);
    h_fill(hk, SSMAX_F32, nkv, 1, &seed);
    h_fill(hv, SSMAX_F32, nkv, 1, &seed);
    for (size_t i = 0; i < nm; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        const uint32_t x = (uint32_t)(seed >> 33);
        hm[i] = ssmax_f32_to_f16(x % 10 < 3 ? -INFINITY : (float)(x % 1000) / 500.0f - 1.0f);
    }
    memcpy(ab.map + oq, hqv, nq * 4);
    memcpy(ab.map + ok, hk, nkv * 4);
    memcpy(ab.map + ov, hv, nkv * 4);
    memcpy(ab.map + om, hm, nm * 2);
    ssmax_buffer *bq, *bk, *bv, *bo, *bm;
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, oq, nq * 4, USAGE_ALL, &bq), 0);
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, ok, nkv * 4, USAGE_ALL, &bk), 0);
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, ov, nkv * 4, USAGE_ALL, &bv), 0);
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, oo, nq * 4, USAGE_ALL, &bo), 0);
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab.buf, om, nm * 2, USAGE_ALL, &bm), 0);
    struct ssmax_attn_buffers bufs = { .q = bq, .k = bk, .v = bv, .o = bo, .mask = bm };
    for (int path = 0; path <= 3; path++) {
        p.path = (enum ssmax_path)path;
        p.kv_splits = path == SSMAX_PATH_SPLIT_KV ? 3 : 0;
        ssmax_plan *plan = NULL;
        if (ssmax_plan_create(ctx, &p, 0, &plan) != SSMAX_OK)
            fail_msg("path %d: %s", path, ssmax_last_error(ctx));
        struct app_cmd ac;
        cmd_begin(&ac);
        static const uint32_t steps[] = { 2, 7, 113, 299, 300 };
        for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
            struct ssmax_exec_args a;
            ssmax_exec_args_default(&a);
            a.kv_len = steps[i];
            if (ssmax_vulkan_plan_record(ctx, plan, ac.cmd, &bufs, &a) < 0)
                fail_msg("path %d, record step %zu: %s", path, i, ssmax_last_error(ctx));
        }
        memset(ab.map + oo, 0xff, nq * 4);
        cmd_submit_wait(&ac);
        double *ref = malloc(nq * sizeof(double));
        struct ssmax_attn_host io = { hqv, hk, hv, NULL, NULL, NULL, ref, NULL, hm };
        struct ssmax_attn_params rp = p;
        rp.path = SSMAX_PATH_AUTO, rp.kv_splits = 0;
        assert_int_equal(ssmax_attn_ref(&rp, &io), SSMAX_OK);
        struct ssmax_compare c;
        ssmax_compare_f32(ref, (const float *)(ab.map + oo), nq, 0, &c);
        struct htol tol = h_tol_o(SSMAX_F32, c.max_ref);
        printf("# recorded inference path %d: nmse %.3g max_abs %.3g\n", path, c.nmse, c.max_abs);
        assert_true(c.nmse <= tol.nmse && c.max_abs <= tol.max_abs && !c.nonfinite_mismatch);
        ssmax_plan_destroy(ctx, &plan);
        cmd_free(&ac);
        free(ref);
    }
    ssmax_buffer_destroy(ctx, &bq), ssmax_buffer_destroy(ctx, &bk);
    ssmax_buffer_destroy(ctx, &bv), ssmax_buffer_destroy(ctx, &bo);
    ssmax_buffer_destroy(ctx, &bm);
    ssmax_context_destroy(&ctx);
    abuf_destroy(&ab);
    free(hqv), free(hk), free(hv), free(hm);
    assert_int_equal(validation_errors, 0);
}

/* A masked padded batch for recorded executions: Q, K, V and a [B,1,Lq,Lk] f32 mask (hidden,
 * 0 and biased entries) in one application VkBuffer, seeded, each imported; an O (and with probs
 * a weights) range for each of up to 4 steps; extra bytes free after them, from free_at. */
#define FIX_STEPS 4
struct rec_fix {
    struct ssmax_attn_params p;
    struct abuf ab;
    size_t nq, nkv, nm, np;
    VkDeviceSize oo, ostep, opr, pstep, free_at;
    float *q, *k, *v, *m;
    ssmax_buffer *bq, *bk, *bv, *bm, *bo[FIX_STEPS], *bp[FIX_STEPS];
    int steps;
};

static void fix_make(struct rec_fix *f, ssmax_context *ctx, uint32_t B, uint32_t lq, uint32_t cap,
                     int steps, int probs, VkDeviceSize extra, uint64_t seed)
{
    memset(f, 0, sizeof(*f));
    const uint32_t D = 64, hq = 4, hkv = 2;
    f->p = params(SSMAX_F32, hq, hkv, lq, cap, D, lq > 1, SSMAX_PATH_AUTO);
    f->p.batch = B;
    f->p.mask = SSMAX_MASK_B1_LQ_LK, f->p.mask_dtype = SSMAX_F32;
    f->steps = steps;
    f->nq = (size_t)B * hq * lq * D, f->nkv = (size_t)B * hkv * cap * D;
    f->nm = (size_t)B * lq * cap, f->np = (size_t)B * hq * lq * cap;
    const VkDeviceSize align = app.props.limits.minStorageBufferOffsetAlignment;
    const VkDeviceSize ok = round_up(f->nq * 4, align), ov = ok + round_up(f->nkv * 4, align);
    const VkDeviceSize om = ov + round_up(f->nkv * 4, align);
    f->oo = om + round_up(f->nm * 4, align);
    f->ostep = round_up(f->nq * 4, align), f->pstep = probs ? round_up(f->np * 4, align) : 0;
    f->opr = f->oo + steps * f->ostep;
    f->free_at = f->opr + steps * f->pstep;
    abuf_create(&f->ab, f->free_at + extra, USAGE_ALL);
    f->q = malloc(f->nq * 4), f->k = malloc(f->nkv * 4), f->v = malloc(f->nkv * 4);
    f->m = malloc(f->nm * 4);
    h_fill(f->q, SSMAX_F32, f->nq, 1, &seed);
    h_fill(f->k, SSMAX_F32, f->nkv, 1, &seed);
    h_fill(f->v, SSMAX_F32, f->nkv, 1, &seed);
    for (size_t i = 0; i < f->nm; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        const uint32_t x = (uint32_t)(seed >> 33);
        f->m[i] = x % 10 < 3 ? -INFINITY : x % 10 < 6 ? 0.0f : (float)(x % 1000) / 500.0f - 1.0f;
    }
    memcpy(f->ab.map, f->q, f->nq * 4);
    memcpy(f->ab.map + ok, f->k, f->nkv * 4);
    memcpy(f->ab.map + ov, f->v, f->nkv * 4);
    memcpy(f->ab.map + om, f->m, f->nm * 4);
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, f->ab.buf, 0, f->nq * 4, USAGE_ALL, &f->bq), 0);
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, f->ab.buf, ok, f->nkv * 4, USAGE_ALL, &f->bk), 0);
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, f->ab.buf, ov, f->nkv * 4, USAGE_ALL, &f->bv), 0);
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, f->ab.buf, om, f->nm * 4, USAGE_ALL, &f->bm), 0);
    for (int st = 0; st < steps; st++) {
        assert_int_equal(ssmax_vulkan_buffer_import(ctx, f->ab.buf, f->oo + st * f->ostep,
                                                    f->nq * 4, USAGE_ALL, &f->bo[st]), 0);
        if (probs)
            assert_int_equal(ssmax_vulkan_buffer_import(ctx, f->ab.buf, f->opr + st * f->pstep,
                                                        f->np * 4, USAGE_ALL, &f->bp[st]), 0);
    }
}

/* Step st's O (and weights) against the reference with its per-batch arrays. */
static void fix_check(const struct rec_fix *f, int st, const uint32_t *kvl, const int64_t *qp,
                      const char *what)
{
    double *ref = malloc(f->nq * sizeof(double));
    float *rp_ = malloc(f->np * 4);
    struct ssmax_attn_host io = { f->q, f->k, f->v, NULL, NULL, rp_, ref, NULL, f->m };
    struct ssmax_attn_params rp = f->p;
    rp.path = SSMAX_PATH_AUTO, rp.kv_splits = 0, rp.kv_lens = kvl, rp.q_positions = qp;
    assert_int_equal(ssmax_attn_ref(&rp, &io), SSMAX_OK);
    struct ssmax_compare c;
    ssmax_compare_f32(ref, (const float *)(f->ab.map + f->oo + st * f->ostep), f->nq, 0, &c);
    struct htol tol = h_tol_o(SSMAX_F32, c.max_ref);
    printf("# %s path %d step %d: nmse %.3g max_abs %.3g\n", what, f->p.path, st, c.nmse,
           c.max_abs);
    assert_true(c.nmse <= tol.nmse && c.max_abs <= tol.max_abs && !c.nonfinite_mismatch);
    if (f->pstep && f->p.path == SSMAX_PATH_UNFUSED) {
        const float *got = (const float *)(f->ab.map + f->opr + st * f->pstep);
        double worst = 0;
        for (size_t i = 0; i < f->np; i++)
            worst = fmax(worst, fabs((double)got[i] - rp_[i]));
        printf("#   weights: max_abs %.3g\n", worst);
        assert_true(worst <= 1e-5);
    }
    free(ref), free(rp_);
}

static void fix_free(struct rec_fix *f, ssmax_context *ctx)
{
    ssmax_buffer_destroy(ctx, &f->bq), ssmax_buffer_destroy(ctx, &f->bk);
    ssmax_buffer_destroy(ctx, &f->bv), ssmax_buffer_destroy(ctx, &f->bm);
    for (int st = 0; st < f->steps; st++)
        ssmax_buffer_destroy(ctx, &f->bo[st]), ssmax_buffer_destroy(ctx, &f->bp[st]);
    abuf_destroy(&f->ab);
    free(f->q), free(f->k), free(f->v), free(f->m);
}

/* A padded batch's decode loop recorded: per-batch lengths and positions that change every step
 * (the plan's coefficient words updated inside the command buffer), a [B,1,Lq,Lk] mask whose
 * rows' counts follow them, each step writing its own O; every step against the reference, under
 * synchronization validation. */
static void test_recorded_per_batch(void **state)
{
    (void)state;
    ssmax_context *ctx = import_ctx();
    struct rec_fix f;
    fix_make(&f, ctx, 3, 2, 300, 3, 0, 0, 5151);
    // Each step's lengths and positions (NULL: each item's last Lq rows).
    static const uint32_t kvl[3][3] = { { 2, 7, 300 }, { 3, 100, 150 }, { 5, 299, 30 } };
    static const int64_t qp[3] = { 3, 297, 28 };
    const int64_t *qps[3] = { NULL, NULL, qp };
    for (int path = 0; path <= 3; path++) {
        f.p.path = (enum ssmax_path)path;
        f.p.kv_splits = path == SSMAX_PATH_SPLIT_KV ? 3 : 0;
        ssmax_plan *plan = NULL;
        if (ssmax_plan_create(ctx, &f.p, 0, &plan) != SSMAX_OK)
            fail_msg("path %d: %s", path, ssmax_last_error(ctx));
        struct app_cmd ac;
        cmd_begin(&ac);
        for (int st = 0; st < 3; st++) {
            struct ssmax_attn_buffers bufs = { .q = f.bq, .k = f.bk, .v = f.bv, .o = f.bo[st],
                                               .mask = f.bm };
            struct ssmax_exec_args a;
            ssmax_exec_args_default(&a);
            a.kv_lens = kvl[st];
            a.q_positions = qps[st];
            if (ssmax_vulkan_plan_record(ctx, plan, ac.cmd, &bufs, &a) < 0)
                fail_msg("path %d, record step %d: %s", path, st, ssmax_last_error(ctx));
        }
        memset(f.ab.map + f.oo, 0xff, (size_t)(f.free_at - f.oo));
        cmd_submit_wait(&ac);
        for (int st = 0; st < 3; st++)
            fix_check(&f, st, kvl[st], qps[st], "recorded per-batch");
        ssmax_plan_destroy(ctx, &plan);
        cmd_free(&ac);
    }
    fix_free(&f, ctx);
    ssmax_context_destroy(&ctx);
    assert_int_equal(validation_errors, 0);
}

/* Recorded executions on the application's scratch (bufs->scratch at ssmax_plan_info's size and
 * alignment): with every device allocation failing they still record (nothing is allocated), and
 * give the reference's O (and weights on the unfused path) for a masked padded batch whose
 * lengths change between steps, every path; then the scratch's bad uses, each refused by name
 * before anything is recorded. */
static void test_recorded_app_scratch(void **state)
{
    (void)state;
    ssmax_context *ctx = import_ctx();
    const VkDeviceSize scr_max = 1 << 20;
    struct rec_fix f;
    fix_make(&f, ctx, 2, 3, 200, 2, 1, scr_max, 6161);
    ssmax_buffer *bs;
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, f.ab.buf, f.free_at, scr_max, USAGE_ALL, &bs),
                     0);
    static const uint32_t kvl[2][2] = { { 50, 200 }, { 7, 120 } };
    for (int path = 0; path <= 3; path++) {
        f.p.path = (enum ssmax_path)path;
        f.p.kv_splits = path == SSMAX_PATH_SPLIT_KV ? 3 : 0;
        const int probs = path == SSMAX_PATH_UNFUSED;
        ssmax_plan *plan = NULL;
        if (ssmax_plan_create(ctx, &f.p, probs ? SSMAX_PLAN_PROBS : 0, &plan) != SSMAX_OK)
            fail_msg("path %d: %s", path, ssmax_last_error(ctx));
        struct ssmax_plan_info pi;
        assert_int_equal(ssmax_plan_get_info(ctx, plan, &pi), SSMAX_OK);
        printf("# path %d: application scratch %llu bytes, aligned to %u\n", path,
               (unsigned long long)pi.scratch_bytes, pi.scratch_align);
        assert_true(pi.scratch_bytes > 0 && pi.scratch_bytes <= scr_max);
        assert_true(pi.scratch_align >= 4 &&
                    app.props.limits.minStorageBufferOffsetAlignment % pi.scratch_align == 0);
        struct app_cmd ac;
        cmd_begin(&ac);
        ssmax_fault_set(ctx, 1, 0); // the next device allocation fails: none may be made
        for (int st = 0; st < 2; st++) {
            struct ssmax_attn_buffers bufs = { .q = f.bq, .k = f.bk, .v = f.bv, .o = f.bo[st],
                                               .probs = probs ? f.bp[st] : NULL, .mask = f.bm,
                                               .scratch = bs };
            struct ssmax_exec_args a;
            ssmax_exec_args_default(&a);
            a.kv_lens = kvl[st];
            if (ssmax_vulkan_plan_record(ctx, plan, ac.cmd, &bufs, &a) < 0)
                fail_msg("path %d, record step %d: %s", path, st, ssmax_last_error(ctx));
        }
        ssmax_fault_set(ctx, 0, 0);
        memset(f.ab.map + f.oo, 0xff, (size_t)(f.free_at + scr_max - f.oo)); // outputs, scratch
        cmd_submit_wait(&ac);
        for (int st = 0; st < 2; st++)
            fix_check(&f, st, kvl[st], NULL, "app scratch");
        ssmax_plan_destroy(ctx, &plan);
        cmd_free(&ac);
    }
    // Bad uses, before anything is recorded (the command buffer handle is never touched).
    f.p.path = SSMAX_PATH_AUTO, f.p.kv_splits = 0;
    ssmax_plan *plan = NULL;
    assert_int_equal(ssmax_plan_create(ctx, &f.p, 0, &plan), SSMAX_OK);
    struct ssmax_plan_info pi;
    assert_int_equal(ssmax_plan_get_info(ctx, plan, &pi), SSMAX_OK);
    const VkCommandBuffer bogus = (VkCommandBuffer)(uintptr_t)1;
    struct ssmax_attn_buffers bufs = { .q = f.bq, .k = f.bk, .v = f.bv, .o = f.bo[0],
                                       .mask = f.bm, .scratch = bs };
    ssmax_buffer *small, *nodst;
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, f.ab.buf, f.free_at, pi.scratch_bytes - 4,
                                                USAGE_ALL, &small), 0);
    struct abuf ab2; // a VkBuffer of its own: one VkBuffer's imports share one usage
    abuf_create(&ab2, scr_max, USAGE_ALL & ~VK_BUFFER_USAGE_TRANSFER_DST_BIT);
    assert_int_equal(ssmax_vulkan_buffer_import(ctx, ab2.buf, 0, scr_max,
                                                USAGE_ALL & ~VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                                                &nodst), 0);
    const struct {
        ssmax_buffer *scratch;
        size_t off;
        ssmax_buffer *o;
        const char *says;
    } bad[] = {
        { small, 0, f.bo[0], "bufs->scratch: needs" },
        { bs, 4, f.bo[0], "bufs->scratch_off" },
        { bs, 0, bs, "overlap" },
        { nodst, 0, f.bo[0], "TRANSFER_DST" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (i == 1 && pi.scratch_align <= 4)
            continue; // every 4-byte offset is aligned here
        struct ssmax_attn_buffers b2 = bufs;
        b2.scratch = bad[i].scratch, b2.scratch_off = bad[i].off, b2.o = bad[i].o;
        int r = ssmax_vulkan_plan_record(ctx, plan, bogus, &b2, NULL);
        printf("# bad scratch %zu: %d %s\n", i, r, ssmax_last_error(ctx));
        assert_true(r < 0);
        assert_non_null(strstr(ssmax_last_error(ctx), bad[i].says));
    }
    // Only recordings take it.
    assert_int_equal(ssmax_plan_execute(ctx, plan, &bufs, NULL), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(ctx), "bufs->scratch: only recorded"));
    assert_int_equal(ssmax_attn(ctx, &f.p, &bufs), SSMAX_ERR_INVALID_ARG);
    assert_non_null(strstr(ssmax_last_error(ctx), "bufs->scratch: only recorded"));
    ssmax_plan_destroy(ctx, &plan);
    ssmax_buffer_destroy(ctx, &small), ssmax_buffer_destroy(ctx, &nodst);
    ssmax_buffer_destroy(ctx, &bs);
    fix_free(&f, ctx);
    ssmax_context_destroy(&ctx);
    abuf_destroy(&ab2);
    assert_int_equal(validation_errors, 0);
}

/* The application's own VkPipelineCache: ssmax builds through it, keeps no file of its own for the
 * device, and leaves it to the application (valid after the context is gone). */
static void test_app_pipeline_cache(void **state)
{
    (void)state;
    VkPipelineCacheCreateInfo pcci = { .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO };
    VkPipelineCache cache;
    assert_int_equal(vkCreatePipelineCache(app.dev, &pcci, NULL, &cache), VK_SUCCESS);
    ssmax_context *ctx = NULL;
    assert_int_equal(ssmax_context_create(NULL, &ctx), SSMAX_OK);
    struct ssmax_vulkan_device d = app_device();
    d.pipeline_cache = cache;
    assert_int_equal(ssmax_vulkan_device_import(ctx, &d), SSMAX_OK);
    run_case(ctx, params(SSMAX_F32, 4, 2, 9, 50, 32, 1, SSMAX_PATH_AUTO), 1);
    ssmax_context_destroy(&ctx);
    size_t n = 0;
    assert_int_equal(vkGetPipelineCacheData(app.dev, cache, &n, NULL), VK_SUCCESS);
    assert_true(n >= 32); // at least the header: the cache is alive and the application's
    vkDestroyPipelineCache(app.dev, cache, NULL);
    assert_int_equal(validation_errors, 0);
}

static void test_app_device_after(void **state)
{
    (void)state;
    app_device_works();
    vkDestroyDevice(app.dev, NULL);
    app.dev = VK_NULL_HANDLE;
    if (app.messenger) {
        PFN_vkDestroyDebugUtilsMessengerEXT dm = (PFN_vkDestroyDebugUtilsMessengerEXT)
            vkGetInstanceProcAddr(app.inst, "vkDestroyDebugUtilsMessengerEXT");
        dm(app.inst, app.messenger, NULL);
        app.messenger = VK_NULL_HANDLE;
    }
    vkDestroyInstance(app.inst, NULL);
    app.inst = VK_NULL_HANDLE;
    assert_int_equal(validation_errors, 0);
}

int main(void)
{
    int r = app_create();
    if (r == 77 && !h_require_devices()) {
        printf("lavapipe not available: skipped\n");
        return 77;
    }
    if (r) {
        printf("could not create the application's device on lavapipe\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_close_with_buffers),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_faults),
        cmocka_unit_test(test_features_as_enabled),
        cmocka_unit_test(test_recorded),
        cmocka_unit_test(test_recorded_inference),
        cmocka_unit_test(test_recorded_per_batch),
        cmocka_unit_test(test_recorded_app_scratch),
        cmocka_unit_test(test_app_pipeline_cache),
        cmocka_unit_test(test_app_device_after),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
