//! LIDAR drivers. `sick` speaks the SICK LMS1xx/LMS5xx `LMDscandata` telegrams (CoLa-A and
//! CoLa-B), the overhead scanners used for vehicle profiling.

pub mod sick;
