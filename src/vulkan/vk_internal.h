/*
 * The Vulkan backend's shared state. The backend is one file a responsibility:
 *   vk_instance.c  loader, instances (the shared one and debug contexts' own), device listing
 *   vk_device.c    device open and close, memory and buffers, command submission
 *   vk_pipeline.c  pipelines from the embedded SPIR-V with specialization constants
 *   vk_pcache.c    the pipeline cache every pipeline is made with, kept on disk between processes
 *   vk_plan.c      the backend's part of the plan: kernel, tiles, driver limits
 *   vk_attn.c      recording and submitting a plan, and the backend table
 *   vk_import.c    the application's own device and buffers (ssmax_vulkan.h)
 * No global Vulkan function pointers: each instance and device has its own table.
 */
#ifndef SSMAX_VK_INTERNAL_H
#define SSMAX_VK_INTERNAL_H

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include "../../shaders/attn_iface.h"
#include "../backend.h"
#include "vk_shaders.h"

#define INSTANCE_FNS(X)                                                                            \
    X(vkDestroyInstance)                                                                           \
    X(vkEnumeratePhysicalDevices)                                                                  \
    X(vkGetPhysicalDeviceProperties)                                                               \
    X(vkGetPhysicalDeviceProperties2)                                                              \
    X(vkGetPhysicalDeviceFeatures2)                                                                \
    X(vkGetPhysicalDeviceQueueFamilyProperties)                                                    \
    X(vkGetPhysicalDeviceMemoryProperties)                                                         \
    X(vkCreateDevice)                                                                              \
    X(vkEnumerateDeviceExtensionProperties)                                                        \
    X(vkGetDeviceProcAddr)

#define DEVICE_FNS(X)                                                                              \
    X(vkDestroyDevice)                                                                             \
    X(vkGetDeviceQueue)                                                                            \
    X(vkCreateBuffer)                                                                              \
    X(vkDestroyBuffer)                                                                             \
    X(vkGetBufferMemoryRequirements)                                                               \
    X(vkAllocateMemory)                                                                            \
    X(vkFreeMemory)                                                                                \
    X(vkBindBufferMemory)                                                                          \
    X(vkMapMemory)                                                                                 \
    X(vkUnmapMemory)                                                                               \
    X(vkCreateCommandPool)                                                                         \
    X(vkDestroyCommandPool)                                                                        \
    X(vkAllocateCommandBuffers)                                                                    \
    X(vkBeginCommandBuffer)                                                                        \
    X(vkEndCommandBuffer)                                                                          \
    X(vkResetCommandBuffer)                                                                        \
    X(vkCmdCopyBuffer)                                                                             \
    X(vkCmdUpdateBuffer)                                                                           \
    X(vkCmdPipelineBarrier)                                                                        \
    X(vkCmdBindPipeline)                                                                           \
    X(vkCmdBindDescriptorSets)                                                                     \
    X(vkCmdPushConstants)                                                                          \
    X(vkCmdDispatch)                                                                               \
    X(vkCmdResetQueryPool)                                                                         \
    X(vkCmdWriteTimestamp)                                                                         \
    X(vkQueueSubmit)                                                                               \
    X(vkCreateFence)                                                                               \
    X(vkDestroyFence)                                                                              \
    X(vkWaitForFences)                                                                             \
    X(vkResetFences)                                                                               \
    X(vkCreateQueryPool)                                                                           \
    X(vkDestroyQueryPool)                                                                          \
    X(vkGetQueryPoolResults)                                                                       \
    X(vkCreateShaderModule)                                                                        \
    X(vkDestroyShaderModule)                                                                       \
    X(vkCreateComputePipelines)                                                                    \
    X(vkCreatePipelineCache)                                                                       \
    X(vkDestroyPipelineCache)                                                                      \
    X(vkGetPipelineCacheData)                                                                      \
    X(vkDestroyPipeline)                                                                           \
    X(vkCreatePipelineLayout)                                                                      \
    X(vkDestroyPipelineLayout)                                                                     \
    X(vkCreateDescriptorSetLayout)                                                                 \
    X(vkDestroyDescriptorSetLayout)                                                                \
    X(vkCreateDescriptorPool)                                                                      \
    X(vkDestroyDescriptorPool)                                                                     \
    X(vkAllocateDescriptorSets)                                                                    \
    X(vkResetDescriptorPool)                                                                       \
    X(vkUpdateDescriptorSets)                                                                      \
    X(vkDeviceWaitIdle)

#define DECL(f) PFN_##f f;

struct vk_phys {
    VkPhysicalDevice pd;
    int loop_limited; // Mesa llvmpipe: 65535 loop iterations per invocation, all loops together
    VkPhysicalDeviceProperties props;
    uint32_t subgroup_size;
    int shuffle; // subgroupShuffle in compute shaders
    uint64_t max_alloc;
    /* VK_EXT_subgroup_size_control for compute: a pipeline may ask for a subgroup size in
     * [sg_min, sg_max] and for workgroups of at most sg_max_subgroups subgroups. */
    int sg_control;
    uint32_t sg_min, sg_max, sg_max_subgroups;
    int exec_props;       // VK_KHR_pipeline_executable_properties with pipelineExecutableInfo
    int compile_only;     // compiles pipelines, cannot run them (fill_info says what is detected)
    char cannot_run[200]; // ... and why
};

struct vk_inst {
    int owned; // a debug context's own instance, destroyed with it; else the shared one
    PFN_vkGetInstanceProcAddr gipa;
    VkInstance inst;
    VkDebugUtilsMessengerEXT messenger;
    PFN_vkDestroyDebugUtilsMessengerEXT destroy_messenger;
    INSTANCE_FNS(DECL)
    struct ssmax_device_info *infos;
    struct vk_phys *phys;
    int ndev;
};

struct vk_buf {
    VkBuffer buf;
    VkDeviceMemory mem;
    void *map; // persistently mapped when host-visible, else NULL (staging copies)
    VkDeviceSize size;
    int imported;             // the application's VkBuffer (vk_import.c): never destroyed
    VkBufferUsageFlags usage; // imported: what it was created with
    /* Imported: one vk_buf per VkBuffer, shared by its ranges (so the generic overlap check sees
     * one object), counted, on the device's list. */
    int refs;
    struct vk_buf *next;
    /* Never reused in the process (vk_buf_id): a recorded plan's descriptor sets are keyed by it,
     * since a new VkBuffer may take a destroyed one's handle value. */
    uint64_t id;
};

struct vk_pipe {
    uint32_t key[2 + SPEC_COUNT]; // shader id, required subgroup size, specialization constants
    VkPipeline pipe;
    int warm; // dispatched once (drivers that compile at the first dispatch: vk_attn.c warm_up)
};

struct vk_dev {
    struct ssmax_dev base;
    struct vk_inst *vi;
    struct vk_phys *ph;
    VkDevice dev;
    DEVICE_FNS(DECL)
    VkQueue queue;
    uint32_t qfam;
    VkCommandPool pool;
    VkCommandBuffer cmd;
    VkFence fence;
    VkQueryPool qpool;
    uint64_t ts_mask;
    VkPhysicalDeviceMemoryProperties mem;
    int unified;         // user buffers are host-visible and mapped
    VkDescriptorSetLayout dsl;
    VkPipelineLayout layout;
    VkDescriptorPool dpool;
    struct vk_pipe *pipes;
    int npipes, cap_pipes;
    /* The pipeline cache every pipeline is made with (vk_pcache.c); VK_NULL_HANDLE: none. */
    VkPipelineCache pcache;
    int pcache_owned;         // 1: ours, saved and destroyed at close; 0: the application's
    VkPipelineCache app_pcache; // imported: the application's cache, or VK_NULL_HANDLE
    int pcache_dirty;         // pipelines were made with it since it was loaded
    int pcache_replace;       // the file on disk failed a check: write even if nothing changed
    size_t pcache_loaded;     // bytes of driver data loaded from the file (0: none)
    uint64_t pcache_sum;      // ... and their fnv64, to skip writing back what was read
    uint64_t pcache_secret[2]; // the cache directory's secret (ssmax_cache_secret)
    char pcache_key[128];     // "vk-<vendor>-<device>-<driver>-<uuid>": the file name and hash key
    char pcache_path[700];    // "": no file (no cache directory, no secret, or turned off)
    struct vk_buf staging, coef, dummy, scr0, scr1, nvis;
    int compile_only; // no command pool, fence, query pool or buffers: pipelines only
    int submitted;    // work was submitted: close waits for the device to be idle
    PFN_vkGetPipelineExecutablePropertiesKHR get_exec_props; // NULL: no statistics
    PFN_vkGetPipelineExecutableStatisticsKHR get_exec_stats;
    /* An imported device (vk_import.c): the VkDevice and queue are the application's, vi and ph
     * are ssmax's own copies for it; submissions go between the application's queue locks. */
    int imported;
    struct vk_buf *imports; // the imported VkBuffers with live ranges (vk_import.c)
    uint32_t qindex;
    void (*lock_queue)(void *priv, uint32_t family, uint32_t index);
    void (*unlock_queue)(void *priv, uint32_t family, uint32_t index);
    void *lock_priv;
};

/* The backend's entries (backend.h): vk_instance.c (init, uninit, devices), vk_device.c (open,
 * close, buffers), vk_plan.c (plan), vk_attn.c (attn). */
SSMAX_BACKEND_DECLS(vk)

/* vk_device.c */
/* The error for a failed Vulkan call: out of memory and device loss get their own codes. */
int vk_err(struct ssmax_context *ctx, VkResult r, const char *what);
/* Grows an internal buffer to at least size bytes; host: 1 host-visible and mapped, 2 also
 * cached (staging reads), 0 device-local. */
int vk_buf_ensure(struct vk_dev *d, struct vk_buf *b, VkDeviceSize size, int host);
/* A new buffer identity (struct vk_buf.id). */
uint64_t vk_buf_id(void);
/* Frees an internal buffer (NULL handles allowed) and zeroes *b. */
void vk_buf_free(struct vk_dev *d, struct vk_buf *b);
/* The device's one command buffer: begin, and end + submit + wait on the fence. */
int vk_cmd_begin(struct vk_dev *d);
int vk_submit_wait(struct vk_dev *d);
void vk_barrier(struct vk_dev *d, VkPipelineStageFlags src, VkAccessFlags sa,
                VkPipelineStageFlags dst, VkAccessFlags da);

/* vk_pcache.c: the device's pipeline cache. app, when not VK_NULL_HANDLE, is a cache the
 * application owns: used as it is, never read from or written to disk here, never destroyed.
 * Otherwise the device gets its own, seeded from the cache directory's file for this device and
 * driver when that passes every check. A cache that cannot be made is logged and left out
 * (pipelines are made without one). */
void vk_pcache_open(struct vk_dev *d, VkPipelineCache app);
/* Writes the owned cache back when pipelines were made since it was loaded (or the file was
 * damaged), then destroys it; an application's cache is only let go. */
void vk_pcache_close(struct vk_dev *d);

/* After d->dev exists (with d->vi, d->ph, d->qfam, d->qindex and d->ts_mask set; d->queue too, or
 * VK_NULL_HANDLE to fetch it): the device functions, the queue, memory, and everything ssmax
 * makes on the device. Shared by vk_open and the import (vk_import.c); on failure it closes d. */
int vk_dev_setup(struct ssmax_context *ctx, struct vk_dev *d, uint32_t tsbits);

/* vk_instance.c: fills vi->phys[idx] and vi->infos[idx] from vi->phys[idx].pd. */
void vk_fill_info(struct vk_inst *vi, int idx);

/* vk_import.c: frees an imported device's vi and ph (vk_close, last); the error of ssmax_buffer_
 * read or write on an imported buffer created without the usage flag they need. */
void vk_import_release(struct vk_dev *d);
/* Drops one range's reference to an imported VkBuffer's vk_buf (vk_buf_destroy). */
void vk_import_buf_release(struct vk_dev *d, struct vk_buf *b);
int vk_import_usage_error(struct ssmax_context *ctx, const char *arg, const char *flag);

/* vk_pipeline.c: the pipeline of shader id with these specialization constants, made once;
 * subgroup > 0 asks for that subgroup size (VK_EXT_subgroup_size_control; 0: the driver's). */
int vk_pipeline(struct vk_dev *d, enum vk_shader_id id, const uint32_t spec[SPEC_COUNT],
                uint32_t subgroup, VkPipeline *out);
/* The backend's pipelines entry (backend.h): each pipeline of the plan built anew, with
 * VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR where the device offers the statistics. */
int vk_pipelines(struct ssmax_dev *base, const struct attn_plan *pl, ssmax_pipe_cb cb, void *priv);
/* vk_attn.c: records one execution (pl, ab) of the plan base into the application's cmd, with
 * the plan's recording state in *state (made at the first recording); and frees that state. */
int vk_record(struct ssmax_dev *dev, const struct attn_plan *base, void **state,
              const struct attn_plan *pl, const struct attn_bufs *ab, VkCommandBuffer cmd);
void vk_plan_state_free(struct ssmax_dev *base, void *state);
/* vk_attn.c: the plan's pipelines and scratch, made ahead of its executions. */
int vk_prepare(struct ssmax_dev *base, const struct attn_plan *pl);

/* vk_attn.c: the pipelines a plan runs, in dispatch order: the shader, its specialization
 * constants and its part in the call. Returns how many (at most VK_PLAN_PIPES): with a mask,
 * mask_count first, then the attention kernels. */
#define VK_PLAN_PIPES 4
struct vk_pipe_req {
    enum vk_shader_id id;
    uint32_t spec[SPEC_COUNT];
    uint32_t subgroup; // the subgroup size asked for, 0: the driver's
    enum attn_role role;
};
int vk_plan_pipes(const struct vk_dev *d, const struct attn_plan *pl,
                  struct vk_pipe_req out[VK_PLAN_PIPES]);

/* vk_plan.c */
/* A tensor's binding: the offset rounded down to minStorageBufferOffsetAlignment, the range
 * that covers the tensor from there, and the tensor's first element within the binding. */
struct vk_bind {
    VkDeviceSize base, range;
    uint32_t elem_off;
};
struct vk_bind vk_bind_of(const struct vk_dev *d, uint64_t off, uint64_t bytes, uint32_t esz);

#endif
