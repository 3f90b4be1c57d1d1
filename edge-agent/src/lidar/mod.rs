//! LIDAR drivers. `sick` speaks the SICK LMS1xx/LMS5xx `LMDscandata` telegrams (CoLa-A and
//! CoLa-B), the overhead scanners used for vehicle profiling; `driver` reads one over TCP as a
//! scan source; `recording` records its raw byte stream and replays it through the same path.

pub mod driver;
pub mod recording;
pub mod sick;
