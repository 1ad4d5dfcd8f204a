/*
 * ssmax inside a Vulkan application's own command buffer.
 *
 * This program is a small Vulkan application that owns everything: its VkInstance (with the
 * validation layer, synchronization validation and a debug messenger of its own, when the layer is
 * installed), its VkDevice, its buffers and a compute shader of its own (vulkan_app_fill.comp).
 * It hands its device and buffers to ssmax (ssmax_vulkan.h) and records, in ONE command buffer:
 *
 *     its fill pass (Q, K, V)  -> barrier -> ssmax attention (ssmax_vulkan_plan_record)
 *                              -> barrier -> its copy of O into a host-visible buffer -> barrier
 *
 * then submits it once with its own fence, waits, and checks O against ssmax's float64 reference
 * computed on the host from the same formula.
 *
 * Exit status: 0 when O matches and the validation layer reported no error, 1 otherwise, 77 when
 * there is no Vulkan device (1 then too when the environment sets SSMAX_REQUIRE_DEVICE=1).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vulkan/vulkan.h>

#include <ssmax/ssmax.h>
#include <ssmax/ssmax_vulkan.h>

/* The fill shader's SPIR-V, compiled by glslc at build time (examples/meson.build). */
static const uint32_t fill_spv[] =
#include "vulkan_app_fill.spv.h"
    ;

/* The attention problem: one decode-like step with grouped-query heads over 333 cached keys. */
enum { BATCH = 1, HQ = 8, HKV = 2, LQ = 4, LK = 333, D = 64 };
#define NQ ((size_t)BATCH * HQ * LQ * D)  /* elements of Q and of O */
#define NKV ((size_t)BATCH * HKV * LK * D) /* elements of K and of V */

#define CHECK_VK(call)                                                                             \
    do {                                                                                           \
        VkResult r_ = (call);                                                                      \
        if (r_ != VK_SUCCESS) {                                                                    \
            fprintf(stderr, "%s:%d: %s failed: VkResult %d\n", __FILE__, __LINE__, #call, r_);    \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

#define CHECK_SSMAX(ctx, call)                                                                     \
    do {                                                                                           \
        int r_ = (call);                                                                           \
        if (r_ != SSMAX_OK) {                                                                      \
            fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #call,              \
                    ssmax_strerror(r_), ssmax_last_error(ctx));                                    \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

/* The same values the fill shader writes: element i of tensor t (0 Q, 1 K, 2 V) in [-1, 1). */
static uint32_t hash32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

static float fill_value(uint32_t i, uint32_t tensor)
{
    return (float)(hash32(i * 4u + tensor) >> 8) * (1.0f / 8388608.0f) - 1.0f;
}

/* Validation messages: errors are counted and printed. */
static unsigned validation_errors;

static VKAPI_ATTR VkBool32 VKAPI_CALL on_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                 VkDebugUtilsMessageTypeFlagsEXT type,
                                                 const VkDebugUtilsMessengerCallbackDataEXT *data,
                                                 void *user)
{
    (void)type, (void)user;
    if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
        validation_errors++;
        fprintf(stderr, "validation error: %s\n", data->pMessage);
    }
    return VK_FALSE;
}

static int has_layer(const char *name)
{
    uint32_t n = 0;
    if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || n == 0)
        return 0;
    VkLayerProperties *layers = calloc(n, sizeof(*layers));
    int found = 0;
    if (layers && vkEnumerateInstanceLayerProperties(&n, layers) == VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++)
            found |= !strcmp(layers[i].layerName, name);
    free(layers);
    return found;
}

/* A memory type allowed by bits with all of want, or UINT32_MAX. */
static uint32_t find_memory(const VkPhysicalDeviceMemoryProperties *mem, uint32_t bits,
                            VkMemoryPropertyFlags want)
{
    for (uint32_t i = 0; i < mem->memoryTypeCount; i++)
        if ((bits & (1u << i)) && (mem->memoryTypes[i].propertyFlags & want) == want)
            return i;
    return UINT32_MAX;
}

/* A buffer with memory of its own: `prefer` if some type has it, else `need`. */
static VkResult make_buffer(VkDevice dev, const VkPhysicalDeviceMemoryProperties *mem,
                            VkDeviceSize size, VkBufferUsageFlags usage, VkMemoryPropertyFlags need,
                            VkMemoryPropertyFlags prefer, VkBuffer *buf, VkDeviceMemory *memory)
{
    VkBufferCreateInfo bci = { .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                               .size = size,
                               .usage = usage,
                               .sharingMode = VK_SHARING_MODE_EXCLUSIVE };
    VkResult r = vkCreateBuffer(dev, &bci, NULL, buf);
    if (r != VK_SUCCESS)
        return r;
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(dev, *buf, &req);
    uint32_t type = find_memory(mem, req.memoryTypeBits, need | prefer);
    if (type == UINT32_MAX)
        type = find_memory(mem, req.memoryTypeBits, need);
    if (type == UINT32_MAX)
        return VK_ERROR_FEATURE_NOT_PRESENT;
    VkMemoryAllocateInfo mai = { .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                 .allocationSize = req.size,
                                 .memoryTypeIndex = type };
    r = vkAllocateMemory(dev, &mai, NULL, memory);
    if (r != VK_SUCCESS)
        return r;
    return vkBindBufferMemory(dev, *buf, *memory, 0);
}

static VkDeviceSize align_up(VkDeviceSize x, VkDeviceSize a)
{
    return (x + a - 1) / a * a;
}

int main(void)
{
    int status = 1; // until everything passed
    const char *req_env = getenv("SSMAX_REQUIRE_DEVICE");
    const int no_device_status = req_env && !strcmp(req_env, "1") ? 1 : 77;

    // Everything the application owns, destroyed at `done` in reverse order.
    VkInstance inst = VK_NULL_HANDLE;
    VkDebugUtilsMessengerEXT messenger = VK_NULL_HANDLE;
    PFN_vkDestroyDebugUtilsMessengerEXT destroy_messenger = NULL;
    VkDevice dev = VK_NULL_HANDLE;
    VkBuffer tensors = VK_NULL_HANDLE, readback = VK_NULL_HANDLE;
    VkDeviceMemory tensors_mem = VK_NULL_HANDLE, readback_mem = VK_NULL_HANDLE;
    VkShaderModule module = VK_NULL_HANDLE;
    VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
    VkPipelineLayout pipe_layout = VK_NULL_HANDLE;
    VkPipeline pipeline = VK_NULL_HANDLE;
    VkDescriptorPool desc_pool = VK_NULL_HANDLE;
    VkCommandPool cmd_pool = VK_NULL_HANDLE;
    VkFence fence = VK_NULL_HANDLE;
    ssmax_context *ctx = NULL;
    float *hq = NULL, *hk = NULL, *hv = NULL;
    double *ref = NULL;

    /* ---- 1. The instance: validation layer, synchronization validation, our messenger ---- */
    const char *layer_name = "VK_LAYER_KHRONOS_validation";
    const int layer = has_layer(layer_name);
    if (!layer)
        printf("VK_LAYER_KHRONOS_validation is not installed: running without validation\n");
    const char *instance_exts[] = { VK_EXT_DEBUG_UTILS_EXTENSION_NAME,
                                    VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME };
    const VkValidationFeatureEnableEXT enables[] = {
        VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT
    };
    VkValidationFeaturesEXT features = { .sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
                                         .enabledValidationFeatureCount = 1,
                                         .pEnabledValidationFeatures = enables };
    VkDebugUtilsMessengerCreateInfoEXT mci = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT,
        .pfnUserCallback = on_message,
    };
    // ssmax needs Vulkan 1.1 at least (ssmax_vulkan_requirements.min_api_version).
    VkApplicationInfo app_info = { .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                                   .pApplicationName = "ssmax vulkan_app example",
                                   .apiVersion = VK_API_VERSION_1_1 };
    VkInstanceCreateInfo ici = { .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                                 .pNext = layer ? &features : NULL,
                                 .pApplicationInfo = &app_info,
                                 .enabledLayerCount = layer ? 1 : 0,
                                 .ppEnabledLayerNames = &layer_name,
                                 .enabledExtensionCount = layer ? 2 : 0,
                                 .ppEnabledExtensionNames = instance_exts };
    if (vkCreateInstance(&ici, NULL, &inst) != VK_SUCCESS) {
        printf("no Vulkan: vkCreateInstance failed\n");
        status = no_device_status;
        goto done;
    }
    if (layer) {
        PFN_vkCreateDebugUtilsMessengerEXT create_messenger = (PFN_vkCreateDebugUtilsMessengerEXT)
            vkGetInstanceProcAddr(inst, "vkCreateDebugUtilsMessengerEXT");
        destroy_messenger = (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(
            inst, "vkDestroyDebugUtilsMessengerEXT");
        if (!create_messenger || !destroy_messenger)
            goto done;
        CHECK_VK(create_messenger(inst, &mci, NULL, &messenger));
    }

    /* ---- 2. The physical device: the first GPU, else the first device (e.g. lavapipe) ---- */
    VkPhysicalDevice pds[16];
    uint32_t npd = 16;
    VkResult er = vkEnumeratePhysicalDevices(inst, &npd, pds);
    if (er < 0)
        npd = 0;
    VkPhysicalDevice pd = VK_NULL_HANDLE;
    VkPhysicalDeviceProperties props;
    for (uint32_t i = 0; i < npd && !pd; i++) {
        vkGetPhysicalDeviceProperties(pds[i], &props);
        if (props.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU ||
            props.deviceType == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU)
            pd = pds[i];
    }
    if (!pd && npd > 0)
        pd = pds[0];
    if (!pd) {
        printf("no Vulkan device\n");
        status = no_device_status;
        goto done;
    }
    vkGetPhysicalDeviceProperties(pd, &props);
    VkPhysicalDeviceMemoryProperties mem;
    vkGetPhysicalDeviceMemoryProperties(pd, &mem);
    printf("device: %s (Vulkan %u.%u)\n", props.deviceName, VK_API_VERSION_MAJOR(props.apiVersion),
           VK_API_VERSION_MINOR(props.apiVersion));

    /* ---- 3. The device, enabling what ssmax asks for (all of it optional) ---- */
    struct ssmax_vulkan_requirements req;
    CHECK_SSMAX(NULL, ssmax_vulkan_device_requirements(vkGetInstanceProcAddr, inst, pd, &req));
    if (req.queue_family < 0) {
        printf("%s has no compute queue\n", props.deviceName);
        status = no_device_status;
        goto done;
    }
    const uint32_t qfam = (uint32_t)req.queue_family;
    VkPhysicalDeviceFeatures2 f2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2 };
    VkPhysicalDeviceSubgroupSizeControlFeatures sgc = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES,
        .subgroupSizeControl = VK_TRUE
    };
    VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR pef = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR,
        .pipelineExecutableInfo = VK_TRUE
    };
    if (req.subgroup_size_control)
        sgc.pNext = f2.pNext, f2.pNext = &sgc;
    if (req.pipeline_executable_info)
        pef.pNext = f2.pNext, f2.pNext = &pef;
    const float priority = 1.0f;
    VkDeviceQueueCreateInfo qci = { .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                    .queueFamilyIndex = qfam,
                                    .queueCount = 1,
                                    .pQueuePriorities = &priority };
    VkDeviceCreateInfo dci = { .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                               .pNext = &f2,
                               .queueCreateInfoCount = 1,
                               .pQueueCreateInfos = &qci,
                               .enabledExtensionCount = req.extension_count,
                               .ppEnabledExtensionNames = req.extensions };
    CHECK_VK(vkCreateDevice(pd, &dci, NULL, &dev));
    VkQueue queue;
    vkGetDeviceQueue(dev, qfam, 0, &queue);

    /* ---- 4. Buffers: Q, K, V and O in one storage buffer (device-local where there is such
     *         memory), each at an offset aligned for a storage binding; a host-visible buffer to
     *         read O back ---- */
    const VkDeviceSize align = props.limits.minStorageBufferOffsetAlignment;
    const VkDeviceSize off_q = 0, off_k = align_up(off_q + NQ * 4, align);
    const VkDeviceSize off_v = align_up(off_k + NKV * 4, align);
    const VkDeviceSize off_o = align_up(off_v + NKV * 4, align);
    const VkDeviceSize total = off_o + NQ * 4;
    // Offsets in floats for the fill shader: multiples of the alignment, itself a multiple of 4.
    const VkBufferUsageFlags tensor_usage =
        VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT;
    CHECK_VK(make_buffer(dev, &mem, total, tensor_usage, 0, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT,
                         &tensors, &tensors_mem));
    const VkMemoryPropertyFlags host =
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    CHECK_VK(make_buffer(dev, &mem, NQ * 4, VK_BUFFER_USAGE_TRANSFER_DST_BIT, host, 0, &readback,
                         &readback_mem));
    float *o_mapped = NULL;
    CHECK_VK(vkMapMemory(dev, readback_mem, 0, VK_WHOLE_SIZE, 0, (void **)&o_mapped));
    for (size_t i = 0; i < NQ; i++)
        o_mapped[i] = -12345.0f; // anything ssmax did not write shows

    /* ---- 5. The fill pipeline: one storage buffer, three push-constant words ---- */
    VkShaderModuleCreateInfo smci = { .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                      .codeSize = sizeof(fill_spv),
                                      .pCode = fill_spv };
    CHECK_VK(vkCreateShaderModule(dev, &smci, NULL, &module));
    VkDescriptorSetLayoutBinding binding = { .binding = 0,
                                             .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                             .descriptorCount = 1,
                                             .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT };
    VkDescriptorSetLayoutCreateInfo dslci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = 1,
        .pBindings = &binding
    };
    CHECK_VK(vkCreateDescriptorSetLayout(dev, &dslci, NULL, &set_layout));
    struct fill_push {
        uint32_t first, count, tensor;
    };
    VkPushConstantRange pcr = { .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
                                .size = sizeof(struct fill_push) };
    VkPipelineLayoutCreateInfo plci = { .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                        .setLayoutCount = 1,
                                        .pSetLayouts = &set_layout,
                                        .pushConstantRangeCount = 1,
                                        .pPushConstantRanges = &pcr };
    CHECK_VK(vkCreatePipelineLayout(dev, &plci, NULL, &pipe_layout));
    VkComputePipelineCreateInfo cpci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = { .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                   .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                   .module = module,
                   .pName = "main" },
        .layout = pipe_layout
    };
    CHECK_VK(vkCreateComputePipelines(dev, VK_NULL_HANDLE, 1, &cpci, NULL, &pipeline));
    VkDescriptorPoolSize pool_size = { VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1 };
    VkDescriptorPoolCreateInfo dpci = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                        .maxSets = 1,
                                        .poolSizeCount = 1,
                                        .pPoolSizes = &pool_size };
    CHECK_VK(vkCreateDescriptorPool(dev, &dpci, NULL, &desc_pool));
    VkDescriptorSetAllocateInfo dsai = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                         .descriptorPool = desc_pool,
                                         .descriptorSetCount = 1,
                                         .pSetLayouts = &set_layout };
    VkDescriptorSet set;
    CHECK_VK(vkAllocateDescriptorSets(dev, &dsai, &set));
    VkDescriptorBufferInfo dbi = { .buffer = tensors, .offset = 0, .range = VK_WHOLE_SIZE };
    VkWriteDescriptorSet wds = { .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                 .dstSet = set,
                                 .descriptorCount = 1,
                                 .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                 .pBufferInfo = &dbi };
    vkUpdateDescriptorSets(dev, 1, &wds, 0, NULL);

    /* ---- 6. ssmax on our device and buffers, and a plan for the problem ---- */
    struct ssmax_context_params cp;
    ssmax_context_params_default(&cp);
    cp.backends = SSMAX_BACKEND_CPU_BIT; // no devices of its own: it runs on the imported one
    CHECK_SSMAX(NULL, ssmax_context_create(&cp, &ctx));
    struct ssmax_vulkan_device vd;
    memset(&vd, 0, sizeof(vd));
    vd.instance = inst;
    vd.get_instance_proc_addr = vkGetInstanceProcAddr;
    vd.physical_device = pd;
    vd.device = dev;
    vd.queue_family = qfam;
    vd.queue_index = 0;
    vd.queue = queue;
    vd.api_version = app_info.apiVersion;
    vd.enabled_extensions = req.extensions;
    vd.enabled_extension_count = req.extension_count;
    vd.enabled_features = &f2;
    // No lock_queue / unlock_queue: this application submits from one thread only.
    CHECK_SSMAX(ctx, ssmax_vulkan_device_import(ctx, &vd));
    ssmax_buffer *bq = NULL, *bk = NULL, *bv = NULL, *bo = NULL;
    CHECK_SSMAX(ctx, ssmax_vulkan_buffer_import(ctx, tensors, off_q, NQ * 4, tensor_usage, &bq));
    CHECK_SSMAX(ctx, ssmax_vulkan_buffer_import(ctx, tensors, off_k, NKV * 4, tensor_usage, &bk));
    CHECK_SSMAX(ctx, ssmax_vulkan_buffer_import(ctx, tensors, off_v, NKV * 4, tensor_usage, &bv));
    CHECK_SSMAX(ctx, ssmax_vulkan_buffer_import(ctx, tensors, off_o, NQ * 4, tensor_usage, &bo));
    struct ssmax_attn_params p;
    ssmax_attn_params_default(&p); // f32, SSMax with s = 0.43, scale 1/sqrt(D)
    p.batch = BATCH, p.q_heads = HQ, p.kv_heads = HKV, p.q_len = LQ, p.kv_len = LK, p.head_dim = D;
    p.causal = 1; // the 4 query rows are the last 4 positions: row i sees keys 0..329+i
    ssmax_plan *plan = NULL;
    CHECK_SSMAX(ctx, ssmax_plan_create(ctx, &p, 0, &plan));
    struct ssmax_plan_info info;
    CHECK_SSMAX(ctx, ssmax_plan_get_info(ctx, plan, &info));
    printf("plan: %s, kernel %s, %u key splits\n",
           info.path == SSMAX_PATH_FUSED      ? "fused"
           : info.path == SSMAX_PATH_SPLIT_KV ? "split-KV"
                                              : "unfused",
           info.kernel, info.kv_splits);

    /* ---- 7. One command buffer: fill -> ssmax -> copy O out ---- */
    VkCommandPoolCreateInfo cpoolci = { .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                        .queueFamilyIndex = qfam };
    CHECK_VK(vkCreateCommandPool(dev, &cpoolci, NULL, &cmd_pool));
    VkCommandBufferAllocateInfo cbai = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                         .commandPool = cmd_pool,
                                         .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                         .commandBufferCount = 1 };
    VkCommandBuffer cmd;
    CHECK_VK(vkAllocateCommandBuffers(dev, &cbai, &cmd));
    VkCommandBufferBeginInfo cbbi = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                      .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT };
    CHECK_VK(vkBeginCommandBuffer(cmd, &cbbi));

    // Our fill pass: Q, K and V, one dispatch each (disjoint ranges: no barrier between them).
    vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline);
    vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe_layout, 0, 1, &set, 0, NULL);
    const struct fill_push fills[3] = {
        { (uint32_t)(off_q / 4), (uint32_t)NQ, 0 },
        { (uint32_t)(off_k / 4), (uint32_t)NKV, 1 },
        { (uint32_t)(off_v / 4), (uint32_t)NKV, 2 },
    };
    for (int t = 0; t < 3; t++) {
        vkCmdPushConstants(cmd, pipe_layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(fills[t]),
                           &fills[t]);
        vkCmdDispatch(cmd, (fills[t].count + 63) / 64, 1, 1);
    }

    // What ssmax_vulkan_plan_record needs before: our writes of Q, K, V visible to compute-shader
    // reads, and O free for compute-shader writes.
    VkMemoryBarrier fill_to_ssmax = { .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                                      .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                                      .dstAccessMask = VK_ACCESS_SHADER_READ_BIT |
                                                       VK_ACCESS_SHADER_WRITE_BIT };
    vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                         VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &fill_to_ssmax, 0, NULL, 0,
                         NULL);

    // ssmax's dispatches and its own barriers go into our command buffer; nothing is submitted.
    struct ssmax_attn_buffers bufs = { .q = bq, .k = bk, .v = bv, .o = bo };
    CHECK_SSMAX(ctx, ssmax_vulkan_plan_record(ctx, plan, cmd, &bufs, NULL));

    // After: O was written by compute shaders; our copy reads it in the transfer stage.
    VkMemoryBarrier ssmax_to_copy = { .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                                      .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                                      .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT };
    vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT,
                         0, 1, &ssmax_to_copy, 0, NULL, 0, NULL);
    VkBufferCopy region = { .srcOffset = off_o, .dstOffset = 0, .size = NQ * 4 };
    vkCmdCopyBuffer(cmd, tensors, readback, 1, &region);

    // And the copy made visible to the host, which reads after the fence.
    VkMemoryBarrier copy_to_host = { .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                                     .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
                                     .dstAccessMask = VK_ACCESS_HOST_READ_BIT };
    vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1,
                         &copy_to_host, 0, NULL, 0, NULL);
    CHECK_VK(vkEndCommandBuffer(cmd));

    /* ---- 8. Submit once, with our fence, and wait ---- */
    VkFenceCreateInfo fci = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
    CHECK_VK(vkCreateFence(dev, &fci, NULL, &fence));
    VkSubmitInfo si = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                        .commandBufferCount = 1,
                        .pCommandBuffers = &cmd };
    CHECK_VK(vkQueueSubmit(queue, 1, &si, fence));
    CHECK_VK(vkWaitForFences(dev, 1, &fence, VK_TRUE, 120ull * 1000000000ull));

    /* ---- 9. The same Q, K, V on the host, the float64 reference, and the comparison ---- */
    hq = malloc(NQ * sizeof(float));
    hk = malloc(NKV * sizeof(float));
    hv = malloc(NKV * sizeof(float));
    ref = malloc(NQ * sizeof(double));
    if (!hq || !hk || !hv || !ref)
        goto done;
    for (size_t i = 0; i < NQ; i++)
        hq[i] = fill_value((uint32_t)i, 0);
    for (size_t i = 0; i < NKV; i++)
        hk[i] = fill_value((uint32_t)i, 1), hv[i] = fill_value((uint32_t)i, 2);
    struct ssmax_attn_host io = { .q = hq, .k = hk, .v = hv, .o_f64 = ref };
    p.q_pos = -1; // as the plan's execution: the query rows are the last positions
    CHECK_SSMAX(NULL, ssmax_attn_ref(&p, &io));
    struct ssmax_compare cmp;
    ssmax_compare_f32(ref, o_mapped, NQ, 1e-4, &cmp);
    printf("O: %zu values, nmse %.3e, max_abs %.3e (max |ref| %.3f), non-finite mismatches %zu\n",
           cmp.count, cmp.nmse, cmp.max_abs, cmp.max_ref, cmp.nonfinite_mismatch);
    for (int i = 0; i < cmp.n_first_bad; i++)
        printf("  O[%zu] = %g, reference %g\n", cmp.first_bad[i], cmp.first_got[i],
               cmp.first_ref[i]);
    const int match = cmp.nmse <= 1e-8 && cmp.nonfinite_mismatch == 0;

    /* ---- 10. ssmax goes first (it frees what it made on our device), then our objects ---- */
    ssmax_context_destroy(&ctx);
    vkDestroyFence(dev, fence, NULL), fence = VK_NULL_HANDLE;
    vkDestroyCommandPool(dev, cmd_pool, NULL), cmd_pool = VK_NULL_HANDLE;
    printf("validation errors: %u%s\n", validation_errors, layer ? "" : " (no validation layer)");
    if (match && validation_errors == 0) {
        printf("PASS\n");
        status = 0;
    } else {
        printf("FAIL\n");
    }

done:
    ssmax_context_destroy(&ctx); // NULL-safe; first, before anything it ran on
    if (dev) {
        vkDeviceWaitIdle(dev);
        vkDestroyFence(dev, fence, NULL);
        vkDestroyCommandPool(dev, cmd_pool, NULL);
        vkDestroyDescriptorPool(dev, desc_pool, NULL);
        vkDestroyPipeline(dev, pipeline, NULL);
        vkDestroyPipelineLayout(dev, pipe_layout, NULL);
        vkDestroyDescriptorSetLayout(dev, set_layout, NULL);
        vkDestroyShaderModule(dev, module, NULL);
        vkDestroyBuffer(dev, readback, NULL);
        vkFreeMemory(dev, readback_mem, NULL); // unmaps it
        vkDestroyBuffer(dev, tensors, NULL);
        vkFreeMemory(dev, tensors_mem, NULL);
        vkDestroyDevice(dev, NULL);
    }
    if (messenger)
        destroy_messenger(inst, messenger, NULL);
    if (inst)
        vkDestroyInstance(inst, NULL);
    free(hq), free(hk), free(hv), free(ref);
    // Errors reported during teardown count too.
    if (status == 0 && validation_errors != 0) {
        printf("validation errors during teardown: %u\nFAIL\n", validation_errors);
        status = 1;
    }
    return status;
}
