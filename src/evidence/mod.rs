//! Evidence: mmap packet ring, PCAP+zstd writer, alert log.
